"""Names that the plugins (on compute nodes) and the zoo (in planning) both use, defined once here,
where importing them costs nothing (no torch)."""

L2C = ("7x7", "7x3-3x7")  # the L2C convolutions of FCC heads: one 7x7 conv, or a 7x3 then a 3x7 conv
# The MMDetection a paper's numbers came from (a recipe's `framework`), and the top-level key of a config
# built with an older one's model settings (the era and the settings applied; `zoo/_frameworks.py`),
# which a training records in its provenance.
FRAMEWORKS = ("mmdet-1.x", "mmdet-2.8", "mmdet-3.3")
FRAMEWORK_KEY = "framework"
