"""Loading Stable Diffusion and CLIP the real way, and building tiny models of the same classes."""


class ModelNotAvailable(RuntimeError):
    """A model could not be found locally or fetched; the message says how to provide it."""
