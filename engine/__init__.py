"""Lode: a Ray engine that turns geoscience imagery into measured geology."""

__version__ = "0.1.0"
