"""An example of a model of your own for sbrrepro: `zoo` declares it, `plugins` registers its module."""
