"""Data: the built-in phantom, dataset loaders, prompts and the training Dataset."""
