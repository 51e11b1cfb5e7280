"""Names that the plugins (on compute nodes) and the zoo (in planning) both use, defined once here,
where importing them costs nothing (no torch)."""

L2C = ("7x7", "7x3-3x7")  # the L2C convolutions of FCC heads: one 7x7 conv, or a 7x3 then a 3x7 conv
