"""Sampling: one denoising loop (scheduler + classifier-free guidance) over any backend."""
