"""The rehearsal (`make rehearse`, docs/rehearsal.md): configs/paper.yaml's setting on the real-size models.

Under `make test`: the rehearsal config differs from paper.yaml in counts only, the paper's LoRA on the real-size
SD 2.1-base UNet and text encoder has the paper's parameters and adapter keys, and the rules' memory asks follow
the rehearsal's measured peaks. Marked `rehearsal`: the outputs of a finished `make rehearse` in this checkout
(which runs it as its last step); skipped unless pytest is run with `-m rehearsal`.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import REPO
from datadream_core import layout
from datadream_core.memory import DATA_ALLOWANCE_MB, HEADROOM, REHEARSAL_PEAK_MB, SAME_CODE_AS, memory_ask_mb

PAPER = yaml.safe_load((REPO / "configs/paper.yaml").read_text(encoding="utf-8"))
REHEARSAL = yaml.safe_load((REPO / "configs/rehearsal.yaml").read_text(encoding="utf-8"))
# The paper's adapter on SD 2.1-base at rank 16: every attention's to_q/to_k/to_v/to_out.0 in the UNet (16
# transformer blocks, self and cross attention), q/k/v/out_proj in the text encoder's 23 layers.
UNET_LORA_PARAMETERS = 3_319_808
TEXT_ENCODER_LORA_PARAMETERS = 3_014_656
UNET_ADAPTED_MODULES = 16 * 2 * 4
TEXT_ADAPTED_MODULES = 23 * 4
# What the rehearsal may change: counts, where the models and data are, bf16 for the paper's half precision
# (a CPU's), and the Table 2 baselines, which it runs too. Everything else must be paper.yaml's.
CHANGED = {"seeds", "shots", "datasets", "models.sd.path", "models.clip.name", "models.clip.pretrained",
           "dream.batch_size", "dream.epochs", "dream.mixed_precision", "synth.n_synth", "synth.steps",
           "synth.mixed_precision", "synth.disef_steps", "synth.disef_max_attempts", "synth.disef_filter",
           "synth.captioner", "classify.methods", "classify.coop", "classify.vpt", "classify.epochs",
           "classify.mixed_precision", "classify.workers", "fid", "scaling"}


def leaves(node, prefix=""):
    if isinstance(node, dict):
        return {key: value for name, child in node.items() for key, value in leaves(child, f"{prefix}{name}.").items()}
    return {prefix.rstrip("."): node}


def changed_by_rehearsal(key: str) -> bool:
    return any(key == name or key.startswith(f"{name}.") for name in CHANGED)


def test_rehearsal_config_keeps_the_papers_model_settings():
    paper, rehearsal = leaves(PAPER), leaves(REHEARSAL)
    differing = {key: (paper.get(key), rehearsal.get(key)) for key in sorted(set(paper) | set(rehearsal))
                 if not changed_by_rehearsal(key) and paper.get(key) != rehearsal.get(key)}
    assert differing == {}
    assert {PAPER["dream"]["mixed_precision"], PAPER["synth"]["mixed_precision"],
            PAPER["classify"]["mixed_precision"]} == {"no", "fp16"}
    assert {REHEARSAL[stage]["mixed_precision"] for stage in ("dream", "synth", "classify")} == {"bf16"}
    assert REHEARSAL["synth"]["generators"] == PAPER["synth"]["generators"]
    (entry,) = REHEARSAL["datasets"].values()
    assert entry["source"] == "coop" and entry["class_names"] == "released"


def test_bf16_runs_the_gpus_casting_code_on_a_cpu_and_fp16_stays_fp32_there():
    import torch

    from datadream_core.classify.train import _autocast
    from datadream_core.models.sd import compute_dtype
    from datadream_core.synth.text2img import SamplingSettings, pipeline_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [compute_dtype(setting, cpu) for setting in ("no", "fp16", "bf16")] == [None, None, torch.bfloat16]
    assert [compute_dtype(setting, cuda) for setting in ("no", "fp16", "bf16")] == [None, torch.float16, torch.bfloat16]
    assert pipeline_dtype(SamplingSettings(mixed_precision="bf16"), cpu) == torch.bfloat16
    assert pipeline_dtype(SamplingSettings(mixed_precision="fp16"), cpu) == torch.float32
    square = torch.ones(4, 4)
    with _autocast(cpu, "bf16"):
        assert (square @ square).dtype == torch.bfloat16
    with _autocast(cpu, "fp16"):
        assert (square @ square).dtype == torch.float32


def test_real_size_lora_has_the_papers_parameters_and_adapter_keys(tmp_path):
    from safetensors.torch import load_file

    from datadream_core.dream import (TEXT_LORA_TARGETS, UNET_LORA_TARGETS, DreamSettings, adapted_modules, add_lora,
                                      save_lora)
    from datadream_core.models.architectures import (SD21_BASE_UNET, SD21_TEXT_ENCODER, build_text_encoder,
                                                     build_unet)
    from datadream_core.models.sd import SDParts

    parts = SDParts(tokenizer=None, text_encoder=build_text_encoder(SD21_TEXT_ENCODER), vae=None,
                    unet=build_unet(SD21_BASE_UNET), noise_scheduler=None)
    settings = DreamSettings(rank=PAPER["dream"]["rank"], alpha=PAPER["dream"]["alpha"],
                             train_text_encoder=PAPER["dream"]["train_text_encoder"])
    params = add_lora(parts, settings)

    def lora_count(model):
        return sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)

    assert (lora_count(parts.unet), lora_count(parts.text_encoder)) == (UNET_LORA_PARAMETERS,
                                                                        TEXT_ENCODER_LORA_PARAMETERS)
    assert sum(p.numel() for p in params) == UNET_LORA_PARAMETERS + TEXT_ENCODER_LORA_PARAMETERS
    unet_modules, text_modules = adapted_modules(parts.unet), adapted_modules(parts.text_encoder)
    assert len(unet_modules) == UNET_ADAPTED_MODULES and len(text_modules) == TEXT_ADAPTED_MODULES
    assert {"to_out.0" if name.endswith(".to_out.0") else name.rsplit(".", 1)[-1]
            for name in unet_modules} == set(UNET_LORA_TARGETS)
    assert {name.rsplit(".", 1)[-1] for name in text_modules} == set(TEXT_LORA_TARGETS)

    state = load_file(save_lora(parts, settings, tmp_path))
    assert len(state) == 2 * (UNET_ADAPTED_MODULES + TEXT_ADAPTED_MODULES)
    assert sum(tensor.numel() for tensor in state.values()) == UNET_LORA_PARAMETERS + TEXT_ENCODER_LORA_PARAMETERS
    assert {key.split(".", 1)[0] for key in state} == {"unet", "text_encoder"}
    assert all(re.search(r"\.(lora|lora_linear_layer)\.(down|up)\.weight$", key) for key in state)
    down_shapes = {tuple(tensor.shape) for key, tensor in state.items() if ".down." in key}
    assert down_shapes >= {(16, 320), (16, 1024), (16, 1280)}


def test_fabricated_benchmark_reads_as_its_first_classes_under_the_released_names(tmp_path):
    from datadream_core.config import DatasetSpec
    from datadream_core.data.build import class_count, index_dataset
    from datadream_core.data.fabricate import fabricate_zhou_benchmark

    fabricate_zhou_benchmark(tmp_path / "dtd", "dtd", {"train": 2, "val": 1, "test": 1}, (20, 15), seed=0)
    spec = DatasetSpec(name="dtd", source="coop", root=str(tmp_path), class_names="released", num_classes=2)
    index = index_dataset(spec)
    assert class_count(spec) == 2 and [info.name for info in index.classes] == ["banded", "blotchy"]
    assert sorted((item.class_index, item.split) for item in index.items) == sorted(
        (label, split) for label in range(2) for split, count in (("train", 2), ("val", 1), ("test", 1))
        for _ in range(count))
    with Image.open(index.items[0].path) as image:
        assert image.size == (20, 15)
    assert class_count(DatasetSpec(name="dtd", source="coop", root=str(tmp_path))) == 47


def test_memory_asks_follow_the_rehearsals_peaks():
    measured = json.loads((REPO / "benchmarks/results-rehearsal.json").read_text(encoding="utf-8"))
    assert REHEARSAL_PEAK_MB == measured["max_rss_mb"]
    assert all(run["rules"][rule]["max_rss_mb"] <= peak for run in measured["runs"]
               for rule, peak in REHEARSAL_PEAK_MB.items())
    for rule, peak in REHEARSAL_PEAK_MB.items():
        ask, need = memory_ask_mb(rule), HEADROOM * peak + DATA_ALLOWANCE_MB.get(rule, 0)
        assert ask % 1024 == 0 and need <= ask < need + 1024
        assert memory_ask_mb(rule, attempt=2) == 2 * ask
    # every model rule asks through memory_ask, under its own family's name (chunk rules share their family's)
    rule_files = "\n".join(path.read_text(encoding="utf-8") for path in sorted((REPO / "rules").glob("*.smk")))
    asked = set(re.findall(r'mem_mb=memory_ask\("(\w+)"\)', rule_files))
    assert asked == set(REHEARSAL_PEAK_MB) | set(SAME_CODE_AS)


# ---- the outputs of a finished `make rehearse` -----------------------------------------------------------------
DATASET = next(iter(REHEARSAL["datasets"]))
SHOTS, SEED = REHEARSAL["shots"][0], REHEARSAL["seeds"][0]
N_CLASSES = REHEARSAL["datasets"][DATASET]["num_classes"]
rehearsal = pytest.mark.rehearsal


def results(path: str) -> Path:
    found = REPO / path
    assert found.exists(), f"{path} is missing: run `make rehearse` first"
    return found


@rehearsal
def test_rehearsal_adapters_are_the_papers():
    from safetensors.torch import load_file

    folders = [layout.adapter_dir(DATASET, "dset", SHOTS, SEED)]
    folders += [layout.adapter_dir(DATASET, "cls", SHOTS, SEED, index) for index in range(N_CLASSES)]
    for folder in folders:
        state = load_file(results(f"{folder}/{layout.LORA_FILE}"))
        counts = {part: sum(t.numel() for key, t in state.items() if key.startswith(f"{part}.")) for part in
                  ("unet", "text_encoder")}
        assert counts == {"unet": UNET_LORA_PARAMETERS, "text_encoder": TEXT_ENCODER_LORA_PARAMETERS}
        assert len(state) == 2 * (UNET_ADAPTED_MODULES + TEXT_ADAPTED_MODULES)
        summary = json.loads(results(f"{folder}/train.json").read_text(encoding="utf-8"))
        assert summary["resolution"] == 512
        assert summary["trainable_parameters"] == UNET_LORA_PARAMETERS + TEXT_ENCODER_LORA_PARAMETERS


@rehearsal
def test_rehearsal_images_are_512_px_for_every_generator():
    for generator in REHEARSAL["synth"]["generators"]:
        manifest = results(layout.synth_manifest(DATASET, generator, SHOTS, SEED))
        with open(manifest, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == N_CLASSES * REHEARSAL["synth"]["n_synth"]
        for row in rows:
            with Image.open(REPO / row["path"]) as image:
                assert (image.size, image.mode) == ((512, 512), "RGB")


@rehearsal
def test_rehearsal_classifiers_and_fid_have_their_metrics():
    generators = REHEARSAL["synth"]["generators"]
    n_synth = REHEARSAL["synth"]["n_synth"]
    runs = [("zeroshot", 0), ("real", 0), ("real/coop", 0), ("real/vpt", 0)]
    runs += [(f"{kind}_{generator}", n_synth) for generator in generators for kind in ("synth", "real+synth")]
    for trainset, n in runs:
        values = json.loads(results(layout.classifier_metrics(DATASET, trainset, SHOTS, SEED, n)).read_text(encoding="utf-8"))
        assert 0.0 <= values["accuracy"] <= 100.0 and len(values["per_class_accuracy"]) == N_CLASSES  # percent
    for generator in generators:
        summary = json.loads(results(layout.fid_summary(DATASET, generator, SHOTS, SEED)).read_text(encoding="utf-8"))
        assert summary["n_synth"] == N_CLASSES * n_synth
