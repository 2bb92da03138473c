"""The miniature world: deterministic rendering, the designed source/target shift, and the base-model build."""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import run_snakemake
from datadream_core.data.miniworld import (MARKINGS, WORLD_CLASSES, render_image, render_source, render_world)
from datadream_core.models.build_miniworld_models import QUICK_BUDGET, build_miniworld_models
from datadream_core.models.clip import load_clip
from datadream_core.models.pretrain import multi_positive_loss
from datadream_core.models.sd import load_sd_parts, load_sd_pipeline

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "assets" / "miniworld_models"


def _digest(rows) -> str:
    digest = hashlib.sha256()
    for path, class_index, split in rows:
        digest.update(f"{Path(path).name}{class_index}{split}".encode())
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def test_rendering_is_deterministic_per_seed_and_differs_across_seeds(tmp_path):
    counts = {"train": 2, "test": 1}
    first = render_world(tmp_path / "a", "target", 32, counts, seed=3)
    again = render_world(tmp_path / "b", "target", 32, counts, seed=3)
    other = render_world(tmp_path / "c", "target", 32, counts, seed=4)
    assert len(first) == 3 * len(WORLD_CLASSES)
    assert _digest(first) == _digest(again) != _digest(other)
    # a split's images do not depend on which other splits are rendered with it
    alone = render_world(tmp_path / "d", "target", 32, {"test": 1}, seed=3)
    assert _digest(alone) == _digest([row for row in first if row[2] == "test"])
    source, source_again = render_source(40, 32, seed=1), render_source(40, 32, seed=1)
    assert np.array_equal(source.images, source_again.images) and source.captions == source_again.captions
    assert not np.array_equal(source.images, render_source(40, 32, seed=2).images)
    # sample i does not depend on how many are rendered
    assert np.array_equal(render_source(10, 32, seed=1, start=30).images, source.images[30:])


def _render(domain: str, count: int) -> np.ndarray:
    """(classes, count, 32, 32, 3) float images."""
    return np.stack([np.stack([np.asarray(render_image(cls, domain, 32, np.random.default_rng([5, c, i])), dtype=np.float64)
                               for i in range(count)]) for c, cls in enumerate(WORLD_CLASSES)])


def test_source_and_target_differ_as_designed():
    source, target = _render("source", 24), _render("target", 24)
    # background: grey studio in the source, a warm sand/olive gradient in the target (corner pixels R - B)
    corners = lambda x: np.concatenate([x[:, :, :2, :2].reshape(-1, 3), x[:, :, -2:, -2:].reshape(-1, 3)])
    assert abs((corners(source)[:, 0] - corners(source)[:, 2]).mean()) < 3
    assert (corners(target)[:, 0] - corners(target)[:, 2]).mean() > 40
    # markings are white (245); no background of either domain is that bright
    marked = lambda x: (x.min(axis=-1) > 238).sum(axis=(2, 3)) >= 2  # (classes, count)
    target_marked, source_marked = marked(target), marked(source)
    for c, cls in enumerate(WORLD_CLASSES):
        # every real image of a class shows the class's own marking
        assert target_marked[c].all() if cls.marking != "none" else not target_marked[c].any(), cls
        # the source shows any marking on any class (3 in 4 carry one): the name does not tell which
        assert 0.5 < source_marked[c].mean() < 0.95, cls
    # the two classes of a pair share shape and colour and differ only by marking
    for first, second in zip(WORLD_CLASSES[::2], WORLD_CLASSES[1::2]):
        assert (first.shape, first.colour) == (second.shape, second.colour) and first.marking != second.marking
    assert {cls.marking for cls in WORLD_CLASSES} == set(MARKINGS)


def test_source_captions_and_truth():
    data = render_source(300, 32, seed=0)
    assert all(len(caption.split()) <= 14 for caption in data.captions)  # fits a 16-token context
    names = {cls.name for cls in WORLD_CLASSES}
    with_name = [i for i, caption in enumerate(data.captions) if caption.split()[-1] in names]
    assert 0.2 < len(with_name) / len(data.captions) < 0.4
    every = np.arange(len(data.captions))
    truth = data.truth(every, every)
    assert truth.diagonal().all()
    for i in with_name[:20]:  # a class-name caption is true exactly of that class's images
        assert set(np.flatnonzero(truth[:, i])) == set(np.flatnonzero(data.attributes[:, 4] == data.attributes[i, 4]))


def test_multi_positive_loss_is_clip_loss_for_distinct_captions():
    logits = torch.randn(6, 6)
    plain = (torch.nn.functional.cross_entropy(logits, torch.arange(6)) + torch.nn.functional.cross_entropy(logits.T, torch.arange(6))) / 2
    assert torch.allclose(multi_positive_loss(logits, torch.eye(6, dtype=torch.bool)), plain)
    truth = torch.eye(6, dtype=torch.bool)
    truth[0, 1] = truth[1, 0] = True
    assert multi_positive_loss(logits, truth) != multi_positive_loss(logits, torch.eye(6, dtype=torch.bool))


@pytest.fixture(scope="module")
def quick_build(tmp_path_factory):
    """The workflow target that builds the base models, with the `quick` budget (seconds, untrained models)."""
    work = tmp_path_factory.mktemp("miniworld_models")
    config = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    run_snakemake(work, config, "results/models/miniworld/quick_seed0/build.json")
    out = work / "results/models/miniworld/quick_seed0"
    return out, json.loads((out / "build.json").read_text())


@pytest.mark.e2e
def test_quick_build_writes_loadable_models(quick_build):
    out, report = quick_build
    assert report["seed"] == 0 and report["budget"]["sd"]["steps"] == QUICK_BUDGET.sd.steps
    assert {"render", "vae", "sd", "clip"} <= set(report["wall_seconds"])
    assert not (out / ".stages").exists()
    parts = load_sd_parts(str(out / "sd"))
    assert parts.noise_scheduler.config.prediction_type == "v_prediction"
    assert parts.noise_scheduler.config.beta_schedule == "scaled_linear"
    assert parts.unet.dtype == torch.float32 and parts.resolution == 32
    from safetensors import safe_open
    with safe_open(out / "sd" / "unet" / "diffusion_pytorch_model.safetensors", "pt") as weights:
        assert weights.get_tensor(next(iter(weights.keys()))).dtype == torch.float16  # small files
    pipe = load_sd_pipeline(str(out / "sd"), scheduler="DDIMScheduler")
    images = pipe(["a photo of a dax"], num_inference_steps=2, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 32, 32, 3)
    clip = load_clip(str(out / "clip"))
    with torch.no_grad():
        features = clip.model.encode_image(torch.zeros(2, 3, 32, 32))
    assert features.shape == (2, 64) and next(clip.model.parameters()).dtype == torch.float32


def test_build_resumes_from_finished_stages(tmp_path):
    # a build killed after some stages keeps them in .stages; the rerun reuses them
    first = build_miniworld_models(tmp_path, seed=1, budget=QUICK_BUDGET, threads=1, keep_stages=True)
    assert (tmp_path / ".stages" / "vae" / "stage.json").is_file()
    weights = tmp_path / "sd" / "unet" / "diffusion_pytorch_model.safetensors"
    written = weights.stat().st_mtime_ns
    again = build_miniworld_models(tmp_path, seed=1, budget=QUICK_BUDGET, threads=1)
    assert again["vae"] == first["vae"] and again["sd"] == first["sd"] and again["clip"] == first["clip"]
    assert weights.stat().st_mtime_ns == written and not (tmp_path / ".stages").exists()


@pytest.mark.skipif(not (SHIPPED / "build.json").is_file(), reason="no shipped miniworld models")
def test_shipped_models_load_and_are_small():
    size = sum(path.stat().st_size for path in SHIPPED.rglob("*") if path.is_file())
    assert size < 15 * 2**20
    parts = load_sd_parts(str(SHIPPED / "sd"))
    assert parts.noise_scheduler.config.prediction_type == "v_prediction"
    assert load_clip(str(SHIPPED / "clip")).image_size == 32


@pytest.mark.e2e
def test_default_config_plans_the_whole_dag_on_the_shipped_models(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    assert config["models"]["sd"]["path"] == "assets/miniworld_models/sd" and len(config["seeds"]) == 3
    planned = run_snakemake(tmp_path, config, "-n").stdout
    counts = {}
    for name, count in re.findall(r"^(\w+)\s+(\d+)$", planned.split("Job stats:")[1], re.MULTILINE):
        family = re.sub(r"_c\d{4}_c\d{4}_\w+$", "", name)  # per-class stages: one rule per dataset and class chunk
        counts[family] = counts.get(family, 0) + int(count)
    n_generators = len(config["synth"]["generators"])
    assert n_generators == 6  # sd, DataDream dset and cls, IsSynth, DISEF, LoFT
    baselines = len(config["classify"]["methods"]) - 1  # CoOp and VPT on the real shots, beside LoRA's runs
    per_seed = (1 + baselines + 2 * n_generators
                + len(config["scaling"]["n_synth"]) * 2 * len(config["scaling"]["generators"]))
    assert counts["train_classifier"] == 3 * per_seed  # real, synth and real+synth of each generator, scaling runs
    assert (counts["evaluate_zeroshot"], counts["file_zeroshot"]) == (1, 3)  # zero-shot once, filed per seed
    assert counts["train_lora_dset"] == counts["train_lora_cls"] == counts["train_lora_image"] == 3
    assert counts["fid_per_class"] == 3 * n_generators
    for rule in ("caption_shots", "sample_grid", "fid_histogram", "scaling_nsynth", "table_accuracy", "table_fid"):
        assert counts.get(rule), rule
