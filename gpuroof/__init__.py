"""gpuroof: measure a device's roofline and place real kernels on it."""

__version__ = "0.1.0"
