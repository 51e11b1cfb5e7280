"""GRoIE (Rossi, Karimi, Prati, "A novel Region of Interest Extraction Layer for Instance Segmentation",
ICPR 2020), as SBR-CNN extends it: the generic RoI extractor whose pre-/post-processing modules may be
chains of plugins (`groie`), and the random level assignment of its Table I (`random_level`). Notes:
README.md here."""

from .groie import GRoIE
from .random_level import RandomLevelRoIExtractor

__all__ = ["GRoIE", "RandomLevelRoIExtractor"]
