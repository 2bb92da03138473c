"""LoFT: one small adapter per real shot (placement, size, a class's adapters trained together, chunk resume) and
generation from mixed pairs."""

import logging
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from datadream_core.config import dream_mode_settings, settings_dataclass, validate_config
from datadream_core.data.fewshot import Shot, read_fewshot
from datadream_core.data.miniworld import render_world
from datadream_core.dream import (FINISHED_DIR, LORA_FILE, UNET_LORA_TARGETS, DreamSettings, adapted_modules, add_lora,
                                  adapter_jobs)
from datadream_core.image_adapters import BatchedLoRALinear, clip_per_adapter, train_image_adapters
from datadream_core.layout import GENERATORS
from datadream_core.models.sd import load_sd_parts
from datadream_core.report import GENERATOR_LABELS
from datadream_core.report.figures import generator_color
from datadream_core.synth.loft import PairMixer, loft_renderer, pair_of, pair_schedule
from datadream_core.synth.sampler import ClassShard, make_shard
from datadream_core.synth.text2img import SamplingSettings, load_text2img, text2img_renderer
from killed_runs import kill_once_written

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["a photo of a blicket", "a photo of a dax"]


def loft_settings(**changes) -> DreamSettings:
    """The per-image adapter settings a workflow job gets from the schema's defaults."""
    dream = validate_config({"datasets": {"w": {"source": "miniworld"}}})["dream"]
    return settings_dataclass(DreamSettings, {**dream_mode_settings(dream, "loft"), **changes})


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    rows = render_world(tmp_path_factory.mktemp("world"), "target", 32, {"train": 3}, seed=0)
    ranks = {}
    result = []
    for path, class_index, _ in rows:
        if class_index < 2:
            result.append(Shot(path, class_index, ranks.setdefault(class_index, 0)))
            ranks[class_index] += 1
    return result


def test_loft_settings_are_the_released_ones():
    settings = loft_settings()
    assert (settings.rank, settings.alpha, settings.train_text_encoder, settings.learning_rate, settings.batch_size,
            settings.epochs, settings.warmup_steps, settings.crop) == (2, 2, False, 1e-3, 1, 600, 10, "center")


def _unet_attention_projections(unet) -> set[str]:
    return {name for name, module in unet.named_modules()
            if isinstance(module, torch.nn.Linear) and any(name.endswith("." + target) for target in UNET_LORA_TARGETS)}


def test_per_image_adapter_sits_on_the_unet_attention_only_at_rank_2(tiny_sd):
    parts = load_sd_parts(tiny_sd)
    expected = _unet_attention_projections(parts.unet)
    widths = sum(module.in_features + module.out_features
                 for name, module in parts.unet.named_modules() if name in expected)
    params = add_lora(parts, loft_settings())
    assert len(expected) == 56  # 7 transformer blocks (2 down, 4 up, 1 mid) x 2 attentions x 4 projections
    assert adapted_modules(parts.unet) == expected
    assert adapted_modules(parts.text_encoder) == set()
    assert all(min(p.shape) == 2 for p in params)
    assert sum(p.numel() for p in params) == 2 * widths == 13_440


def test_sd21_base_per_image_adapter_has_414976_parameters():
    """SD 2.1-base's UNet has 128 attention projections (16 transformer blocks x self and cross attention x
    to_q, to_k, to_v, to_out.0); rank r adds r x (in + out) parameters to each: 414,976 at rank 2, an eighth of
    DataDream's rank-16 UNet adapter (3,319,808, tests/test_dream.py), and LoFT adds none to the text encoder."""
    from peft import LoraConfig

    from datadream_core.models.architectures import SD21_BASE_UNET, build_unet

    with torch.device("meta"):
        unet = build_unet(SD21_BASE_UNET)
    unet.requires_grad_(False)
    settings = loft_settings()
    unet.add_adapter(LoraConfig(r=settings.rank, lora_alpha=settings.alpha, init_lora_weights="gaussian",
                                target_modules=list(UNET_LORA_TARGETS)))
    assert len(adapted_modules(unet)) == 128
    assert sum(p.numel() for p in unet.parameters() if p.requires_grad) == 414_976


def test_one_adapter_per_shot_in_rank_order(tiny_sd, shots, tmp_path):
    out_dirs = [tmp_path / f"c{c}" / f"shot{r}" for c in (0, 1) for r in range(3)]
    jobs = adapter_jobs(out_dirs, shots, PROMPTS, [0, 1], per_image=True)
    assert [(job.scope, len(job.examples)) for job in jobs] == [((c + 1, r + 1), 1) for c in (0, 1) for r in range(3)]
    in_order = sorted(shots, key=lambda shot: (shot.class_index, shot.rank))
    assert [job.examples[0].path for job in jobs] == [shot.path for shot in in_order]
    summaries = train_image_adapters(tiny_sd, jobs[:2], loft_settings(epochs=4, warmup_steps=1), seed=0)
    assert [(summary["steps"], summary["trained_together"]) for summary in summaries] == [(4, 2), (4, 2)]
    saved = [load_file(out_dir / LORA_FILE) for out_dir in out_dirs[:2]]
    assert {key.split(".")[0] for key in saved[0]} == {"unet"} and len(saved[0]) == 2 * 56
    assert all(min(value.shape) == 2 for value in saved[0].values())
    assert any(not torch.equal(saved[0][key], saved[1][key]) for key in saved[0])
    with pytest.raises(ValueError, match="4 adapter folders .* gives 6 adapters"):
        adapter_jobs(out_dirs[:4], shots, PROMPTS, [0, 1], per_image=True)


def test_a_class_trained_together_equals_its_adapters_trained_one_at_a_time(tiny_sd, shots, tmp_path):
    """Each adapter gets exactly the updates it would get alone: its own sample's loss, its own gradient norm
    clipped, its own AdamW state. At LoFT's learning rate float32 sums in another order (a batch of 3 against 1)
    leave at most 1e-5 (seen: 1e-6 on factors of size ~2); AdamW turns such noise into larger steps where the
    learning rate is much higher."""
    settings = loft_settings(epochs=12, warmup_steps=2, max_grad_norm=0.05)  # clipping bites
    adapters = {}
    for together in (True, False):
        dirs = [tmp_path / str(together) / f"c{c}" / f"shot{r}" for c in (0, 1) for r in range(3)]
        summaries = train_image_adapters(tiny_sd, adapter_jobs(dirs, shots, PROMPTS, [0, 1], per_image=True),
                                         settings, seed=3, together=together)
        assert {summary["trained_together"] for summary in summaries} == ({3} if together else {1})
        adapters[together] = [load_file(folder / LORA_FILE) for folder in dirs]
    for batched, alone in zip(adapters[True], adapters[False]):
        assert batched.keys() == alone.keys()
        assert all(torch.allclose(batched[key], alone[key], rtol=0, atol=1e-5) for key in alone)
    ups = [adapter[key] for adapter in adapters[False] for key in adapter if key.endswith("up.weight")]
    assert min(up.abs().max().item() for up in ups) > 1e-3  # every adapter trained away from its zero init
    first = adapters[False][0]
    assert all(any(not torch.allclose(first[key], other[key]) for key in first) for other in adapters[False][1:])


def test_batched_lora_gives_each_sample_its_own_factors_and_clips_each_adapter_alone():
    torch.manual_seed(0)
    base = torch.nn.Linear(5, 4)
    layer = BatchedLoRALinear(base, rank=2, scale=0.5, init_generators=[torch.Generator().manual_seed(i) for i in (1, 2)])
    with torch.no_grad():
        layer.up.normal_()
    inputs = torch.randn(2, 3, 5)
    outputs = layer(inputs)
    for index in range(2):
        alone = base(inputs[index]) + 0.5 * inputs[index] @ layer.down[index].T @ layer.up[index].T
        assert torch.allclose(outputs[index], alone, atol=1e-6)
    outputs[0].sum().backward()  # only sample 0's loss: adapter 1 gets no gradient
    assert layer.down.grad[1].abs().max() == 0 and layer.down.grad[0].abs().max() > 0
    layer.up.grad[1] = torch.full_like(layer.up.grad[1], 10.0)
    norms = [torch.cat([layer.down.grad[i].flatten(), layer.up.grad[i].flatten()]).norm() for i in range(2)]
    clip_per_adapter([layer.down, layer.up], max_norm=1.0)
    clipped = [torch.cat([layer.down.grad[i].flatten(), layer.up.grad[i].flatten()]).norm() for i in range(2)]
    assert clipped[0] == pytest.approx(min(norms[0].item(), 1.0), rel=1e-4) and clipped[1] == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(ValueError, match="a batch of 3 samples through 2 per-sample adapters"):
        layer(torch.randn(3, 3, 5))


def train_chunk(sd: str, fewshot: str | Path, out: str | Path) -> None:
    torch.set_num_threads(1)  # the killed run and the runs of this process compute alike
    dirs = [f"{out}/c{c}/shot{r}" for c in (0, 1) for r in range(3)]
    jobs = adapter_jobs(dirs, read_fewshot(fewshot), PROMPTS, [0, 1], per_image=True)
    train_image_adapters(sd, jobs, DreamSettings(rank=2, alpha=2, train_text_encoder=False, batch_size=1, epochs=20,
                         learning_rate=1e-3, warmup_steps=3, crop="center", checkpoint_every=5), seed=1)


KILLED_CHUNK = "import sys\nsys.path.insert(0, sys.argv[1])\nfrom test_loft import train_chunk\n\ntrain_chunk(*sys.argv[2:])\n"


def test_killed_chunk_keeps_its_finished_classes_and_resumes_to_the_same_adapters(tiny_sd, shots, tmp_path, caplog):
    from datadream_core.data.fewshot import write_fewshot

    fewshot = tmp_path / "fewshot.csv"
    write_fewshot(fewshot, shots)
    train_chunk(tiny_sd, fewshot, tmp_path / "whole")
    second_class = tmp_path / "killed" / "c1" / "shot0"  # its class's checkpoint lives in its first adapter's folder
    stderr = kill_once_written(KILLED_CHUNK, [str(REPO / "tests"), tiny_sd, str(fewshot), str(tmp_path / "killed")],
                               second_class / "checkpoint.pt", tmp_path)
    assert (second_class / "checkpoint.pt").exists() and not (second_class / LORA_FILE).exists(), stderr[-3000:]
    finished = [tmp_path / "killed" / "c0" / f"shot{r}" for r in range(3)]
    assert all((folder / FINISHED_DIR / LORA_FILE).exists() for folder in finished)
    for folder in (tmp_path / "killed").glob("c*/shot*"):  # Snakemake removes a killed job's declared outputs
        for name in (LORA_FILE, "train.json", "losses.csv"):
            (folder / name).unlink(missing_ok=True)
    with caplog.at_level(logging.INFO, logger="datadream"):
        train_chunk(tiny_sd, fewshot, tmp_path / "killed")
    assert caplog.text.count("finished by an earlier run of this chunk, kept") == 3
    assert "resuming" in caplog.text and "c1/shot0 from step" in caplog.text
    for folder in (tmp_path / "whole").glob("c*/shot*"):
        resumed = tmp_path / "killed" / folder.relative_to(tmp_path / "whole")
        whole, again = load_file(folder / LORA_FILE), load_file(resumed / LORA_FILE)
        assert whole.keys() == again.keys()
        assert all(torch.allclose(again[key], whole[key], rtol=0, atol=1e-6) for key in whole), folder
        assert (resumed / "losses.csv").read_text() == (folder / "losses.csv").read_text()
        assert not (resumed / FINISHED_DIR).exists() and not (resumed / "checkpoint.pt").exists()


# ---- generation ------------------------------------------------------------------------------------------------
SAMPLING = SamplingSettings(steps=3, guidance_scale=2.0, batch_size=4)
CPU = torch.device("cpu")


def test_pair_schedule_covers_every_pair_before_repeating():
    schedule = pair_schedule(16, seed=3, class_index=5)
    assert len(schedule) == 120 and set(schedule) == set(combinations(range(16), 2))
    assert schedule == pair_schedule(16, seed=3, class_index=5)
    assert [pair_of(schedule, i) for i in range(500)] == [schedule[i % 120] for i in range(500)]
    assert schedule != pair_schedule(16, seed=4, class_index=5) and schedule != pair_schedule(16, seed=3, class_index=6)
    assert schedule != sorted(schedule)
    assert pair_schedule(1, seed=0, class_index=0) == [(0, 0)]
    assert sorted(pair_schedule(3, seed=0, class_index=0)) == [(0, 1), (0, 2), (1, 2)]


@pytest.fixture(scope="module")
def image_adapters(tiny_sd, shots, tmp_path_factory):
    root = tmp_path_factory.mktemp("image_adapters")
    out_dirs = [root / f"c1/shot{r}" for r in range(3)]
    train_image_adapters(tiny_sd, adapter_jobs(out_dirs, shots, PROMPTS, [1], per_image=True),
                         loft_settings(epochs=3, warmup_steps=1, learning_rate=3e-2), seed=0)
    return [str(folder) for folder in out_dirs]


def _sample(pipe, seed=1):
    return pipe(["a photo of a dax"], num_inference_steps=3, output_type="np",
                generator=torch.Generator().manual_seed(seed)).images


def _unet_state(pipe):
    return {key: value.clone() for key, value in pipe.unet.state_dict().items()}


def test_mixed_pair_equals_diffusers_adapter_mixing(tiny_sd, image_adapters):
    mixed_here = load_text2img(tiny_sd, SAMPLING, CPU)
    base_state, base = _unet_state(mixed_here), _sample(mixed_here)
    mixer = PairMixer(mixed_here, weight=0.5)
    mixer.load(image_adapters)
    assert np.abs(_sample(mixed_here) - base).max() == 0  # loaded, not used: the base model
    mixer.use([(0, 2)])
    ours = _sample(mixed_here)

    mixed = load_text2img(tiny_sd, SAMPLING, CPU)
    mixed.load_lora_weights(image_adapters[0], adapter_name="a")
    mixed.load_lora_weights(image_adapters[2], adapter_name="b")
    mixed.set_adapters(["a", "b"], [0.5, 0.5])
    assert np.abs(ours - _sample(mixed)).max() < 1e-4
    mixed.set_adapters(["a"], [1.0])
    alone = _sample(mixed)
    assert np.abs(ours - base).max() > 1e-3 and np.abs(ours - alone).max() > 1e-3

    mixer.weight = 1.0  # weight 1: the pair's first adapter alone
    mixer.use([(0, 2)])
    assert np.abs(_sample(mixed_here) - alone).max() < 1e-4
    mixer.load(image_adapters)  # the model's own weights were never changed
    state = {key.replace(".base.", "."): value for key, value in _unet_state(mixed_here).items()}
    assert state.keys() == base_state.keys() and all(torch.equal(state[key], base_state[key]) for key in base_state)
    assert np.abs(_sample(mixed_here) - base).max() == 0


def _pixels(folder):
    return {path.name: np.asarray(Image.open(path)) for path in sorted(Path(folder).glob("*.png"))}


def test_loft_images_do_not_depend_on_shards_or_batches(tiny_sd, image_adapters, tmp_path):
    pipe = load_text2img(tiny_sd, SAMPLING, CPU)
    mixer = PairMixer(pipe, weight=0.5)
    mixer.load(image_adapters)
    schedule = pair_schedule(3, seed=2, class_index=1)
    seen = []

    def recording(prompts, generators, indices):
        seen.append(list(indices))
        return text2img_renderer(pipe, SAMPLING)(prompts, generators, indices)

    render = loft_renderer(recording, mixer, schedule)
    make_shard(ClassShard("loft", 1, PROMPTS[1], 2, 0, 7), render, tmp_path / "whole", 4)
    assert seen == [[0, 1, 2, 3], [4, 5, 6]]  # pairs share a batch
    make_shard(ClassShard("loft", 1, PROMPTS[1], 2, 0, 3), render, tmp_path / "a", 1)
    make_shard(ClassShard("loft", 1, PROMPTS[1], 2, 3, 7), render, tmp_path / "b", 2)
    assert seen[2:] == [[0], [1], [2], [3, 4], [5, 6]]
    whole, parts = _pixels(tmp_path / "whole"), {**_pixels(tmp_path / "a"), **_pixels(tmp_path / "b")}
    assert whole.keys() == parts.keys() and len(whole) == 7
    # the same image; a batch of another size may round a pixel the other way (float sums in another order)
    assert max(np.abs(whole[name].astype(int) - parts[name]).max() for name in whole) <= 1
    assert np.abs(whole["000000.png"].astype(int) - whole["000003.png"]).mean() > 1.0
    with pytest.raises(ValueError, match="a batch of 3 samples for 2 images' adapter pairs"):
        mixer.use([(0, 1), (1, 2)])
        layer = next(layer for (model, _), layer in mixer.layers.items() if model == "unet")
        layer(torch.zeros(3, 4, layer.base.in_features))


def test_every_generator_has_its_own_label_and_colour():
    assert GENERATOR_LABELS["loft"] == "LoFT" and set(GENERATOR_LABELS) == set(GENERATORS)
    assert len({generator_color(generator) for generator in GENERATORS}) == len(GENERATORS) == 6
