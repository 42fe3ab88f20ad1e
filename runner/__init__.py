"""The shared runner: data, metrics, backbones, the training loop and run records."""
