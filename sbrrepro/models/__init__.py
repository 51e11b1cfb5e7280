"""MMDetection plugins of sbrrepro, loaded by generated configs through `custom_imports`.

One package per paper (`sbr_cnn`, `groie`, `ms_subnet`, `scnet`, `comask`), each with a README.md of how
its modules were reconstructed, and `common` for what several papers' models use. Importing this package
imports every one of them, found by themselves (each package's own `__init__` imports its modules), which
registers the models and hooks in MMDetection's registries; then it applies the checkpoint-loading fix,
so resuming works in any process that loads one of our configs (MMDetection's tools/train.py too).

A new paper adds its package here; nothing else lists them. Plugins of a user's own live in an
installed package, whose modules an entry point of the group `sbrrepro.models` names: they are
imported here too, so that every training process that loads a generated config registers them.
"""

import importlib
import pkgutil
from importlib.metadata import entry_points

from ..compat import allow_own_checkpoints

ENTRY_POINTS = "sbrrepro.models"
PACKAGES = tuple(sorted(info.name for info in pkgutil.iter_modules(__path__)
                        if info.ispkg and not info.name.startswith("_")))

for _name in PACKAGES:
    importlib.import_module(f"{__name__}.{_name}")
for _point in sorted(entry_points(group=ENTRY_POINTS), key=lambda p: p.name):
    _point.load()

allow_own_checkpoints()
