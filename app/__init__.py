"""IHVC Studio: the Qt application."""
__version__ = "0.16.0"
