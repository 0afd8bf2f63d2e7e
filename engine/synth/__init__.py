"""Synthetic polished sections, collections and panoramas with exact truth."""

from engine.synth.collection import write_lumenstone, write_panorama
from engine.synth.minerals import ASSOCIATIONS, REFLECTANCE_RGB
from engine.synth.section import Section, SectionSpec, render_section

__all__ = [
    "ASSOCIATIONS",
    "REFLECTANCE_RGB",
    "Section",
    "SectionSpec",
    "render_section",
    "write_lumenstone",
    "write_panorama",
]
