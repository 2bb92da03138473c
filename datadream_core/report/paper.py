"""Accuracies the DataDream paper reports (16 shots, 500 synthetic images per class, CLIP ViT-B/16).

Keyed by CoOp dataset name so that a run on the same benchmark sits beside the published number.
Real + synthetic rows are Table 1 (bottom); VPT and CoOp are Table 2; zero-shot is Table 1 (top).
"""

PAPER_SHOTS = 16
PAPER_N_SYNTH = 500

_COLUMNS = ("imagenet", "caltech101", "dtd", "eurosat", "fgvc_aircraft", "pets", "cars", "sun397", "food101", "flowers102")
_ROWS = {
    "CLIP zero-shot": (70.2, 96.1, 46.1, 38.1, 23.8, 91.0, 63.1, 63.8, 85.1, 71.8),
    "VPT (R)": (69.6, 95.4, 66.1, 92.3, 36.2, 91.8, 69.0, 70.5, 87.0, 91.0),
    "CoOp (R)": (68.0, 95.2, 70.7, 87.1, 45.5, 89.9, 81.4, 73.0, 83.7, 97.6),
    "Real-finetune (R)": (73.4, 96.8, 78.3, 93.5, 59.3, 94.0, 87.5, 77.1, 87.6, 98.7),
    "IsSynth (R+S)": (73.9, 97.4, 81.6, 93.9, 64.8, 92.1, 88.5, 77.7, 86.0, 99.0),
    "DISEF (R+S)": (73.8, 97.0, 81.5, 94.0, 64.3, 92.6, 87.9, 77.6, 86.2, 99.0),
    "DataDream_cls (R+S)": (73.8, 97.6, 81.6, 93.8, 68.3, 94.5, 91.2, 77.5, 87.5, 99.4),
    "DataDream_dset (R+S)": (74.1, 96.9, 81.6, 93.4, 72.3, 94.8, 92.4, 77.5, 87.6, 99.4),
}
PAPER_ACCURACY: dict[str, dict[str, float]] = {
    label: dict(zip(_COLUMNS, values)) for label, values in _ROWS.items()
}
