"""CLIP LoRA classifier: zero-shot, real, synthetic and real + synthetic train sets.

`train.run_classifier` is the entry point; `trainsets` is torch-free for the Snakefile.
"""
