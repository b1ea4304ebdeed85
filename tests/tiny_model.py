"""The tiny model the tests build, written once (pyproject's pytest `pythonpath` puts tests/ on the path)."""

from polypsynth.config import TinyModelConfig

# 32 px images, 8x8x4 latents, a 16-wide text encoder of one layer: seconds to build and sample.
SMALL = TinyModelConfig(
    unet_channels=[16, 32], vae_channels=[16, 32, 32], text_hidden_size=16, text_layers=1, text_heads=2
)

# The same model as a training config's `model:` block, with heads 8 channels wide.
TINY_MODEL = {
    "resolution": 32,
    "tiny": {
        "unet_channels": SMALL.unet_channels,
        "layers_per_block": SMALL.layers_per_block,
        "attention_head_dim": 8,
        "vae_channels": SMALL.vae_channels,
        "latent_channels": SMALL.latent_channels,
        "text_hidden_size": SMALL.text_hidden_size,
        "text_layers": SMALL.text_layers,
        "text_heads": SMALL.text_heads,
    },
}
