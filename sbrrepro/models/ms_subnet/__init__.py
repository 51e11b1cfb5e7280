"""The multi-scale subnetwork for RoI pooling (Linh and Arai, IJCTE 2018): a mask RoI extractor that crops
each RoI at several sizes, projects and pools each crop, and fuses the branches (`roi_extractor`). No
code of the authors is public: how it was reconstructed is README.md here."""

from .roi_extractor import MultiScaleSubnetRoIExtractor

__all__ = ["MultiScaleSubnetRoIExtractor"]
