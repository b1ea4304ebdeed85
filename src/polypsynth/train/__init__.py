"""The two-stage fine-tuning recipe (plus the autoencoder stage for tiny models)."""
