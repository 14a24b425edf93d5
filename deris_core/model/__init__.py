"""The DeRIS network: cognition (BEiT-3) + perception (Swin, pixel decoder, masked decoder)."""

from .deris import DeRIS, DeRISOutput, ImageFeatures, build_deris

__all__ = ["DeRIS", "DeRISOutput", "ImageFeatures", "build_deris"]
