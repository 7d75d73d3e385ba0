"""CLIP2Point for Hugging Face: depth rendering, image-depth pre-training and the Gated Dual-Path Adapter."""

from .configuration_clip2point import CLIP2PointConfig

__version__ = "0.1.0"

__all__ = ["CLIP2PointConfig"]
