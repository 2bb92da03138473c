# Tiny randomly initialised models for smoke runs and tests (models.*.build_tiny: true).

if config["models"]["sd"]["build_tiny"]:

    rule build_tiny_sd:
        output:
            SD_MODEL_MARKER,
        log:
            "logs/build_tiny_models/sd.log",
        params:
            kind="sd",
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../workflow_scripts/build_tiny_model.py"


if config["models"]["clip"]["build_tiny"]:

    rule build_tiny_clip:
        output:
            CLIP_MODEL_MARKER,
        log:
            "logs/build_tiny_models/clip.log",
        params:
            kind="clip",
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../workflow_scripts/build_tiny_model.py"


# DISEF's captioner: a tiny randomly initialised BLIP (synth.captioner_build_tiny: true).
CAPTIONER_MARKER = f"{config['synth']['captioner']}/config.json"

if config["synth"]["captioner_build_tiny"]:

    rule build_tiny_captioner:
        output:
            CAPTIONER_MARKER,
        log:
            "logs/build_tiny_models/captioner.log",
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../workflow_scripts/build_tiny_captioner.py"
