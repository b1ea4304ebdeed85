"""Model components: the tiny Stable-Diffusion-shaped model built offline, pretrained loading, saving."""

from polypsynth.models.loading import Components, load_components, load_pretrained, save_components
from polypsynth.models.tiny import build_tiny

__all__ = ["Components", "build_tiny", "load_components", "load_pretrained", "save_components"]
