"""What users look at: accuracy and FID tables, scaling and FID figures, sample grids."""

GENERATOR_LABELS = {
    "sd": "Stable Diffusion",
    "datadream_dset": "DataDream_dset",
    "datadream_cls": "DataDream_cls",
    "issynth": "IsSynth",
    "disef": "DISEF",
    "loft": "LoFT",
}


def generator_label(generator: str) -> str:
    return GENERATOR_LABELS.get(generator, generator)
