"""conelib: the reproducible companion to *On the Cone Effect in the Learning Dynamics* (Zhou et al., 2025)."""

__version__ = "0.1.0"
