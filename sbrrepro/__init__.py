"""sbrrepro: reproduce paper tables on MMDetection 3.x."""
