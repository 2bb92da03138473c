"""Synthetic image generation: the shared sharded sampler loop and one module per generator."""
