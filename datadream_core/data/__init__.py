"""Dataset sources, the image loader and nested few-shot sampling."""
