"""CLIP LoRA classifier on the tiny open_clip model and a rendered 8-class world."""

import json
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from conftest import REPO, run_snakemake
from datadream_core.classify import data as classify_data
from datadream_core.classify import train as classify_train
from datadream_core.classify.data import mix_within_parts, synth_examples, train_examples
from datadream_core.classify.lora import add_lora, encode_text, truncate_context
from datadream_core.classify.methods import trainable_state
from datadream_core.classify.train import learning_rate_at, run_classifier, weighted_loss
from datadream_core.classify.trainsets import method_settings, parse_trainset, trainset_names
from datadream_core.config import ConfigError, validate_config
from datadream_core.data.fewshot import sample_fewshot, write_fewshot
from datadream_core.data.miniworld import WORLD_CLASSES, render_world
from datadream_core.data.table import CLASSES_HEADER, SPLITS_HEADER, read_classes, read_splits
from datadream_core.io import read_csv, read_json, write_csv
from datadream_core.models.clip import load_clip
from datadream_core.models.tiny import TINY_CLIP
from killed_runs import kill_once_written

N_CLASSES = len(WORLD_CLASSES)
SHOTS = 8
FAST = {"epochs": 8, "warmup_epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "augment": "light",
        "workers": 0, "mix_prob": 0.0, "selection": "last", "eval_batch_size": 64}


def classify_config(**overrides) -> dict:
    config = validate_config({"datasets": {"world": {"source": "miniworld"}}, "classify": {**FAST, **overrides}})
    return config["classify"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """classes.csv, splits.csv, an 8-shot fewshot.csv and a 'synthetic' manifest of an easy rendered world."""
    root = tmp_path_factory.mktemp("world")
    rows = render_world(root / "real", "source", 32, {"train": SHOTS, "val": 4, "test": 10}, seed=0)
    write_csv(root / "classes.csv", CLASSES_HEADER,
              [(index, cls.name, cls.name, f"a photo of a {cls.name}") for index, cls in enumerate(WORLD_CLASSES)])
    write_csv(root / "splits.csv", SPLITS_HEADER, rows)
    write_fewshot(root / "fewshot.csv", sample_fewshot(read_splits(root / "splits.csv"), read_classes(root / "classes.csv"), SHOTS, seed=0))
    synth = render_world(root / "synth", "source", 32, {"train": 4}, seed=1)
    write_csv(root / "manifest.csv", ("path", "class_index", "image_index"),
              [(path, class_index, int(Path(path).stem)) for path, class_index, _ in reversed(synth)])
    return root


def run(world: Path, out: Path, trainset: str, n_synth: int = 0, splits: Path | None = None, shots: int = SHOTS,
        **overrides) -> dict:
    """One classifier run with FAST settings; CoOp and VPT keys go in overrides as coop={...} / vpt={...}."""
    settings = method_settings(classify_config(**overrides), parse_trainset(trainset).method, shots)
    return run_classifier(
        dataset="world", trainset=trainset, shots=shots, seed=0, n_synth=n_synth, classes_csv=world / "classes.csv",
        splits_csv=splits or world / "splits.csv", fewshot_csv=world / "fewshot.csv", manifest_csv=world / "manifest.csv",
        clip={"name": os.environ["TINY_CLIP"], "pretrained": ""}, settings=settings,
        metrics_json=out / "metrics.json", per_class_csv=out / "per_class.csv")


@pytest.fixture(autouse=True)
def _tiny_clip_env(tiny_clip, monkeypatch):
    monkeypatch.setenv("TINY_CLIP", tiny_clip)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tiny model's many small ops run fastest on one thread; more threads thrash on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def final_lora(monkeypatch):
    """The trained state (LoRA, CoOp context or VPT prompts) the classifier ends training with."""
    captured = {}
    fit = classify_train.fit

    def capturing_fit(model, *args, **kwargs):
        state = fit(model, *args, **kwargs)
        captured.clear()
        captured.update(trainable_state(model))
        return state

    monkeypatch.setattr(classify_train, "fit", capturing_fit)
    return captured


# --- LoRA -------------------------------------------------------------------------------------------

def _lora_b(model):
    return [p for name, p in model.named_parameters() if ".lora." in name and name.endswith(".B")]


def test_lora_sits_on_q_and_v_of_every_block_of_both_towers(tiny_clip):
    model = load_clip(tiny_clip).model
    before = sum(p.numel() for p in model.parameters())
    adapted = add_lora(model, ["q", "v"], rank=16, alpha=32, dropout=0.1)

    vision, text = TINY_CLIP["vision_cfg"], TINY_CLIP["text_cfg"]
    towers = {"visual.transformer": vision["layers"], "transformer": text["layers"]}
    assert adapted == [f"{tower}.resblocks.{i}.attn" for tower, layers in towers.items() for i in range(layers)]
    expected = {f"{tower}.resblocks.{i}.attn.lora.{target}.{matrix}"
                for tower, layers in towers.items() for i in range(layers) for target in "qv" for matrix in "AB"}
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert set(trainable) == expected
    count = sum(p.numel() for p in trainable.values())
    assert count == vision["layers"] * 2 * 16 * (2 * vision["width"]) + text["layers"] * 2 * 16 * (2 * text["width"])
    assert count == 4 * 2 * 16 * (2 * 96) + 3 * 2 * 16 * (2 * 32) == 30720  # the tiny CLIP: widths 96 and 32
    # The pretrained weights are shared, not copied: the model grew by exactly the LoRA weights.
    assert sum(p.numel() for p in model.parameters()) - before == count
    assert not model.logit_scale.requires_grad


def test_lora_on_all_four_projections_doubles_the_count(tiny_clip):
    model = load_clip(tiny_clip).model
    add_lora(model, ["q", "k", "v", "out"], rank=16, alpha=32, dropout=0.0)
    names = {name.split(".lora.")[1] for name, p in model.named_parameters() if p.requires_grad}
    assert names == {f"{target}.{matrix}" for target in ("q", "k", "v", "out") for matrix in "AB"}
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * 30720


def test_lora_count_on_the_vit_b16_architecture():
    """The paper's classifier: 12 blocks of width 768 (image) and 12 of width 512 (text), as the loader builds it."""
    from datadream_core.models.clip import build_clip

    model = build_clip("ViT-B-16", "openai")
    add_lora(model, ["q", "v"], rank=16, alpha=32, dropout=0.1)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 12 * 2 * 16 * (768 + 768) + 12 * 2 * 16 * (512 + 512) == 983040


def test_lora_starts_at_the_pretrained_model_and_changes_both_towers(tiny_clip):
    reference, adapted = load_clip(tiny_clip), load_clip(tiny_clip)
    add_lora(adapted.model, ["q", "v", "out"], rank=16, alpha=32, dropout=0.1)
    reference.model.eval(), adapted.model.eval()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = reference.tokenize(["a photo of a dax", "a photo of a wug"])
    with torch.no_grad():
        assert torch.allclose(adapted.model.encode_image(images), reference.model.encode_image(images), atol=1e-5)
        assert torch.allclose(adapted.model.encode_text(tokens), reference.model.encode_text(tokens), atol=1e-5)
        for b in _lora_b(adapted.model):
            b.normal_(0, 0.05)
        assert (adapted.model.encode_image(images) - reference.model.encode_image(images)).abs().max() > 1e-3
        assert (adapted.model.encode_text(tokens) - reference.model.encode_text(tokens)).abs().max() > 1e-3


def test_truncated_context_gives_the_full_context_features(tiny_clip):
    loaded = load_clip(tiny_clip)
    model = loaded.model
    tokens = loaded.tokenize(["a photo of a dax", "a photo of a small round blue thing with a dot"])
    plain = model.encode_text(tokens).detach()
    add_lora(model, ["q", "v"], rank=16, alpha=32, dropout=0.1)
    model.eval()
    truncated = truncate_context(model, tokens)
    longest = int(tokens.argmax(dim=-1).max()) + 1
    assert truncated.shape == (2, longest) and longest < tokens.shape[1]
    with torch.no_grad():
        # With B still zero the adapted model on the truncated context equals open_clip's own encode_text.
        assert torch.allclose(encode_text(model, truncated), plain, atol=1e-5)
        for b in _lora_b(model):
            b.normal_(0, 0.05)
        full = encode_text(model, tokens)
        assert torch.allclose(encode_text(model, truncated), full, atol=1e-5)
        # Cutting the end token of the longest prompt does change its features: the check can fail.
        cut = tokens[:, : longest - 1]
        assert not torch.allclose(encode_text(model, cut)[1], full[1], atol=1e-3)


# --- CoOp and VPT ---------------------------------------------------------------------------------

# Small enough for the tiny CLIP's 16-token text context and a few CPU seconds per run.
COOP_FAST = {"context_tokens": 4, "epochs": 6, "epochs_by_shots": {}, "batch_size": 16, "warmup_epochs": 1,
             "learning_rate": 0.05}
VPT_FAST = {"prompt_tokens": 2, "epochs": 6, "batch_size": 16, "warmup_epochs": 1, "learning_rate": 0.05}
METHOD_FAST = {"coop": {"coop": COOP_FAST}, "vpt": {"vpt": VPT_FAST}, "lora": {}}


def _vit_b16(device: str = "meta"):
    import open_clip

    with torch.device(device):
        return open_clip.CLIP(**open_clip.get_model_config("ViT-B-16"), quick_gelu=True)


def test_coop_and_vpt_counts_on_the_vit_b16_architecture():
    """CoOp: 16 context tokens of the text width 512; VPT-deep: N = 10 (our default) tokens of width 768 per layer."""
    from datadream_core.classify.coop import add_coop
    from datadream_core.classify.vpt import add_vpt

    with torch.device("meta"):
        coop, vpt = _vit_b16(), _vit_b16()
        add_coop(coop, context_tokens=16, init_std=0.02)
        add_vpt(vpt, prompt_tokens=10, init_std=0.02)
    assert {name: p.numel() for name, p in coop.named_parameters() if p.requires_grad} == {
        "token_embedding.context": 8192}
    assert 8192 == 16 * 512
    assert {name: p.numel() for name, p in vpt.named_parameters() if p.requires_grad} == {
        "visual.deep_prompts.prompts": 92160}
    assert 92160 == 12 * 10 * 768
    assert classify_config()["vpt"]["prompt_tokens"] == 10
    assert classify_config()["coop"]["context_tokens"] == 16


@pytest.mark.parametrize("method", ["coop", "vpt"])
def test_only_the_method_parameters_receive_gradients_on_vit_b16(method):
    """A backward pass through the real ViT-B/16 (random weights) reaches the method's parameters and nothing else."""
    import open_clip

    from datadream_core.classify.methods import adapt_model, class_tokens, method_options
    from datadream_core.classify.train import class_logits, text_features
    from datadream_core.data.table import ClassRow

    torch.manual_seed(0)
    model = _vit_b16("cpu")
    settings = method_settings(classify_config(), method, 16)
    adapt_model(model, method, None, method_options(settings, method))
    classes = [ClassRow(0, "dax", "dax", "a photo of a dax"), ClassRow(1, "wug", "wug", "a photo of a wug")]
    tokens = truncate_context(model, class_tokens(model, open_clip.get_tokenizer("ViT-B-16"), classes, method,
                                                  method_options(settings, method)))
    logits = class_logits(model, torch.randn(1, 3, 224, 224), text_features(model, tokens), 100.0)
    torch.nn.functional.cross_entropy(logits, torch.tensor([1])).backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    expected = {"coop": {"token_embedding.context"}, "vpt": {"visual.deep_prompts.prompts"}}[method]
    assert with_grad == expected == {name for name, p in model.named_parameters() if p.requires_grad}
    grad = dict(model.named_parameters())[expected.pop()].grad
    assert grad.abs().sum() > 0
    if method == "vpt":  # deep: every layer's prompts get a gradient
        assert (grad.abs().sum(dim=(1, 2)) > 0).all()


def test_coop_learns_the_context_before_the_class_name(tiny_clip):
    from datadream_core.classify.coop import add_coop, coop_tokens

    loaded = load_clip(tiny_clip)
    model = loaded.model.eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model.encode_image(images)
    context = add_coop(model, context_tokens=4, init_std=0.02)
    tokens = coop_tokens(loaded.tokenize, ["dax", "wug"], 4, 16)
    placeholder = loaded.tokenize(["X"])[0, 1]
    assert (tokens[:, 1:5] == placeholder).all()
    assert torch.equal(tokens[:, 5:], loaded.tokenize(["dax.", "wug."])[:, 1:-4])  # the class name follows the context
    with torch.no_grad():
        embedded = model.token_embedding(tokens)
        assert torch.equal(embedded[:, 1:5], context.expand(2, -1, -1))
        first = encode_text(model, truncate_context(model, tokens))
        context.add_(torch.randn(context.shape, generator=torch.Generator().manual_seed(1)))
        assert (encode_text(model, truncate_context(model, tokens)) - first).abs().max() > 1e-3
        # Freezing lets torch pick another attention kernel: equal up to rounding.
        assert torch.allclose(model.encode_image(images), before, atol=1e-5)
    with pytest.raises(ValueError, match="CoOp prompt for class 'wug' .* does not fit in the text tower's context of 16"):
        coop_tokens(loaded.tokenize, ["dax", "wug"], 11, 16)  # "wug." is two tokens, "dax." one


def test_vpt_inserts_its_prompts_before_every_image_block(tiny_clip):
    from datadream_core.classify.vpt import add_vpt

    loaded = load_clip(tiny_clip)
    model = loaded.model
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = loaded.tokenize(["a photo of a dax"])
    model.eval()
    with torch.no_grad():
        plain_image, plain_text = model.encode_image(images), model.encode_text(tokens)
        prompts = add_vpt(model, prompt_tokens=3, init_std=0.02)
        lengths = []
        for block in model.visual.transformer.resblocks:
            block.register_forward_hook(lambda module, args, output: lengths.append(output.shape[1]))
        prompted = model.encode_image(images)
        patches = (32 // 4) ** 2
        assert lengths == [1 + 3 + patches] * TINY_CLIP["vision_cfg"]["layers"]
        assert (prompted - plain_image).abs().max() > 1e-4
        assert torch.equal(model.encode_text(tokens), plain_text)
        # Deep: each block's own prompts matter, the last block's included.
        prompts[-1].add_(torch.randn(prompts[-1].shape, generator=torch.Generator().manual_seed(1)))
        assert (model.encode_image(images) - prompted).abs().max() > 1e-4


@pytest.mark.parametrize("method", ["coop", "vpt"])
def test_coop_and_vpt_train_on_real_and_are_tested_once(world, tmp_path, method, final_lora):
    trainset = f"real/{method}"
    metrics = run(world, tmp_path, trainset, **METHOD_FAST[method])
    assert (metrics["trainset"], metrics["method"], metrics["n_train_images"]) == (trainset, method, SHOTS * N_CLASSES)
    assert metrics["selected_epoch"] == metrics["epochs"] == 6
    assert metrics["classify"]["method"] == method
    rows = read_csv(tmp_path / "per_class.csv")
    assert 100.0 * sum(int(row["correct"]) for row in rows) / (10 * N_CLASSES) == pytest.approx(metrics["accuracy"])
    expected = {"coop": {"token_embedding.context": (4, 32)},
                "vpt": {"visual.deep_prompts.prompts": (TINY_CLIP["vision_cfg"]["layers"], 2, 96)}}[method]
    assert {name: tuple(value.shape) for name, value in final_lora.items()} == expected
    assert not (tmp_path / "checkpoint.pt").exists()


def test_method_settings_take_the_method_section_and_the_epochs_for_k():
    classify = validate_config({"datasets": {"world": {"source": "miniworld"}}, "classify": {"epochs": 7}})["classify"]
    coop = method_settings(classify, "coop", 16)
    assert (coop["method"], coop["optimizer"], coop["learning_rate"], coop["batch_size"], coop["context_tokens"]) == (
        "coop", "sgd", 0.002, 32, 16)
    assert [method_settings(classify, "coop", k)["epochs"] for k in (1, 2, 4, 8, 16)] == [50, 100, 100, 200, 200]
    lora = method_settings(classify, "lora", 16)
    assert (lora["epochs"], lora["optimizer"], lora["learning_rate"]) == (7, "adamw", 1e-4)
    assert not {"coop", "vpt", "methods", "trainsets", "context_tokens"} & set(lora)
    assert method_settings(classify, "vpt", 4, overrides={"epochs": 3})["epochs"] == 3
    with pytest.raises(ValueError, match="trains method 'coop', but the classifier settings are for 'lora'"):
        run_classifier(dataset="w", trainset="real/coop", shots=1, seed=0, n_synth=0, classes_csv="c", splits_csv="s",
                       fewshot_csv="f", manifest_csv=None, clip={}, settings=lora, metrics_json="m", per_class_csv="p")


# --- loss, schedule, data ---------------------------------------------------------------------------

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0], [1.0, -1.0, 0.0], [0.2, 0.1, 0.0]])


def _ce(row: int, target: list[float]) -> float:
    values = LOGITS[row].tolist()
    log_norm = math.log(sum(math.exp(v) for v in values))
    return -sum(t * (v - log_norm) for t, v in zip(target, values))


def test_weighted_loss_equals_the_formula():
    targets = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.3, 0.7, 0], [1, 0, 0]]  # row 3 is a mixed (soft) target
    is_real = torch.tensor([True, False, True, False, False])
    loss = weighted_loss(LOGITS, torch.tensor(targets), is_real, real_weight=0.8)
    expected = 0.8 * (_ce(0, targets[0]) + _ce(2, targets[2])) / 2 + 0.2 * (_ce(1, targets[1]) + _ce(3, targets[3]) + _ce(4, targets[4])) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("is_real, weight", [(False, 0.2), (True, 0.8)])
def test_a_batch_with_an_empty_part_gives_a_finite_loss(is_real, weight):
    logits = LOGITS.clone().requires_grad_(True)
    targets = torch.eye(3)[[0, 1, 2, 0, 0]]
    loss = weighted_loss(logits, targets, torch.full((5,), is_real), real_weight=0.8)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert loss.item() == pytest.approx(weight * sum(_ce(i, targets[i].tolist()) for i in range(5)) / 5, abs=1e-6)


def test_learning_rate_warms_up_linearly_then_follows_a_cosine():
    lr = [learning_rate_at(step, 100, 10, peak=1e-3, floor=1e-8) for step in range(100)]
    assert lr[0] == pytest.approx(1e-8)
    assert lr[5] == pytest.approx((1e-3 + 1e-8) / 2)
    assert lr[10] == pytest.approx(1e-3)
    assert lr[55] == pytest.approx((1e-3 + 1e-8) / 2)
    assert all(a > b for a, b in zip(lr[10:], lr[11:])) and lr[-1] < 1e-5


def test_synthetic_images_are_the_first_n_by_image_index(tmp_path):
    manifest = tmp_path / "manifest.csv"
    write_csv(manifest, ("path", "class_index", "image_index"),
              [("c1_i2.png", 1, 2), ("c0_i1.png", 0, 1), ("c1_i0.png", 1, 0), ("c0_i0.png", 0, 0), ("c1_i1.png", 1, 1), ("c0_i2.png", 0, 2)])
    assert [(e.path, e.label, e.is_real) for e in synth_examples(manifest, 2, 2)] == [
        ("c0_i0.png", 0, False), ("c0_i1.png", 0, False), ("c1_i0.png", 1, False), ("c1_i1.png", 1, False)]
    with pytest.raises(ValueError, match=r"manifest\.csv: fewer than n_synth = 4 synthetic images \(class 0 has 3, class 1 has 3\)"):
        synth_examples(manifest, 4, 2)
    with pytest.raises(ValueError, match=r"\(class 2 has 0\)"):
        synth_examples(manifest, 1, 3)
    with pytest.raises(ValueError, match="c1_i2.png has class index 1, but there are 1 classes"):
        synth_examples(manifest, 1, 1)


def test_real_shots_are_repeated_to_balance_the_synthetic_count(world):
    examples = train_examples(parse_trainset("real+synth_sd"), world / "fewshot.csv", 2, world / "manifest.csv", 4, N_CLASSES)
    real = [e for e in examples if e.is_real]
    assert len(examples) - len(real) == 4 * N_CLASSES
    assert len(real) == 2 * 2 * N_CLASSES and len({e.path for e in real}) == 2 * N_CLASSES
    only_real = train_examples(parse_trainset("real"), world / "fewshot.csv", 2, None, 4, N_CLASSES)
    assert len(only_real) == 2 * N_CLASSES and all(e.is_real for e in only_real)


def test_mixing_stays_within_the_real_and_the_synthetic_part():
    torch.manual_seed(0)
    is_real = torch.tensor([True, False, True, False, True, False])
    labels = torch.tensor([0, 2, 1, 3, 0, 3])
    images = torch.where(is_real[:, None, None, None], 0.0, 1.0).expand(6, 3, 8, 8).contiguous()
    soft = 0
    for _ in range(10):
        mixed, targets = mix_within_parts(images, labels, is_real, num_classes=4)
        assert torch.equal(mixed, images)  # a real image only ever blends with real ones (all 0), synthetic with synthetic (all 1)
        assert torch.allclose(targets.sum(dim=1), torch.ones(6))
        assert targets[is_real][:, 2:].abs().sum() == 0 and targets[~is_real][:, :2].abs().sum() == 0
        soft += int((targets.max(dim=1).values < 1).any())
    assert soft > 0  # labels were really mixed


def test_trainset_names():
    assert trainset_names(["zeroshot", "real", "synth", "real+synth"], ["sd", "datadream_cls"]) == [
        "zeroshot", "real", "synth_sd", "synth_datadream_cls", "real+synth_sd", "real+synth_datadream_cls"]
    assert parse_trainset("real+synth_datadream_dset").generator == "datadream_dset"
    assert parse_trainset("real+synth_datadream_dset").uses_real
    assert not parse_trainset("synth_sd").uses_real
    with pytest.raises(ValueError, match="unknown train set 'synth_'"):
        parse_trainset("synth_")


def test_the_method_follows_the_train_set_after_a_slash_and_lora_keeps_bare_names():
    from datadream_core.classify.trainsets import classifier_trainsets

    assert trainset_names(["zeroshot", "real", "real+synth"], ["sd"], "coop") == ["real/coop", "real+synth_sd/coop"]
    assert (parse_trainset("real/coop").method, parse_trainset("real/coop").uses_real) == ("coop", True)
    assert (parse_trainset("synth_disef/vpt").method, parse_trainset("synth_disef/vpt").generator) == ("vpt", "disef")
    assert parse_trainset("real").method == "lora"
    for bad in ("real/lora", "real/linear", "zeroshot/coop"):
        with pytest.raises(ValueError, match=re.escape(f"'{bad}'")):
            parse_trainset(bad)
    classify = validate_config({"datasets": {"world": {"source": "miniworld"}},
                                "classify": {"methods": ["lora", "coop", "vpt"], "trainsets": ["zeroshot", "real"]}})["classify"]
    assert classifier_trainsets(classify, ["sd"]) == ["zeroshot", "real", "real/coop", "real/vpt"]
    classify["vpt"]["trainsets"] = ["real", "synth"]
    assert classifier_trainsets(classify, ["sd"])[-2:] == ["real/vpt", "synth_sd/vpt"]


# --- training and evaluation ------------------------------------------------------------------------

def test_training_on_real_shots_beats_chance_and_zero_shot(world, tmp_path):
    zeroshot = run(world, tmp_path / "zeroshot", "zeroshot")
    real = run(world, tmp_path / "real", "real")
    chance = 100.0 / N_CLASSES
    assert real["accuracy"] >= 2 * chance
    assert real["accuracy"] >= zeroshot["accuracy"] + 10
    assert (zeroshot["selected_epoch"], real["selected_epoch"]) == (0, FAST["epochs"])
    assert (zeroshot["n_train_images"], real["n_train_images"]) == (0, SHOTS * N_CLASSES)
    rows = read_csv(tmp_path / "real" / "per_class.csv")
    assert [row["name"] for row in rows] == [cls.name for cls in WORLD_CLASSES]
    assert all(int(row["total"]) == 10 for row in rows)
    assert 100.0 * sum(int(row["correct"]) for row in rows) / (10 * N_CLASSES) == pytest.approx(real["accuracy"])
    assert [float(row["accuracy"]) for row in rows] == pytest.approx(real["per_class_accuracy"])
    assert read_json(tmp_path / "real" / "metrics.json") == real
    assert real["classify"]["lora_rank"] == 16 and real["train_images_per_second"] > 0
    assert not (tmp_path / "real" / "checkpoint.pt").exists()


def test_single_kind_batches_in_real_plus_synth_training_stay_finite(world, tmp_path, final_lora):
    # Batch size 1: every batch lacks either the real or the synthetic part.
    metrics = run(world, tmp_path, "real+synth_sd", n_synth=2, batch_size=1, epochs=1, warmup_epochs=0)
    assert metrics["n_train_images"] == N_CLASSES * (2 + SHOTS * max(1, 2 // SHOTS))
    assert all(torch.isfinite(value).all() for value in final_lora.values())
    assert any(name.endswith(".B") and value.abs().sum() > 0 for name, value in final_lora.items())


def _run_counting_reads(world, out, monkeypatch, **overrides) -> tuple[dict, list[str]]:
    loaded = []
    load_rgb = classify_data.load_rgb
    monkeypatch.setattr(classify_data, "load_rgb", lambda path: loaded.append(path) or load_rgb(path))
    metrics = run(world, out, "real", selection="val", epochs=2, **overrides)
    monkeypatch.setattr(classify_data, "load_rgb", load_rgb)
    split_of = {row.path: row.split for row in read_splits(world / "splits.csv")}
    return metrics, [split_of[path] for path in loaded]


def test_test_images_are_read_once_and_only_after_selection(world, tmp_path, monkeypatch):
    metrics, splits = _run_counting_reads(world, tmp_path, monkeypatch, eval_cache_mb=0)
    n_test = splits.count("test")
    assert n_test == 10 * N_CLASSES and set(splits[-n_test:]) == {"test"}
    assert splits.count("val") == 2 * 4 * N_CLASSES  # decoded again every epoch without the cache
    assert len(metrics["val_accuracy"]) == 2
    assert metrics["selected_epoch"] == 1 + metrics["val_accuracy"].index(max(metrics["val_accuracy"]))

    cached, splits = _run_counting_reads(world, tmp_path / "cached", monkeypatch)  # default eval_cache_mb
    assert splits.count("val") == 4 * N_CLASSES and splits.count("test") == n_test
    assert set(splits[-n_test:]) == {"test"}
    # Keeping the decoded val images changes nothing but the time.
    assert (cached["val_accuracy"], cached["accuracy"], cached["per_class_accuracy"]) == (
        metrics["val_accuracy"], metrics["accuracy"], metrics["per_class_accuracy"])


def test_fewshot_validation_reads_min_k_4_val_images_per_class_and_the_test_split_last(world, tmp_path, monkeypatch):
    metrics, splits = _run_counting_reads(world, tmp_path, monkeypatch, eval_cache_mb=0, shots=2)
    n_test = 10 * N_CLASSES
    assert splits.count("val") == 2 * 2 * N_CLASSES and metrics["n_val_images"] == 2 * N_CLASSES  # 2 epochs x min(2, 4)
    assert splits.count("test") == n_test and set(splits[-n_test:]) == {"test"}
    assert metrics["validation"] == "fewshot" and metrics["selected_val_accuracy"] == max(metrics["val_accuracy"])
    full, splits = _run_counting_reads(world, tmp_path / "full", monkeypatch, eval_cache_mb=0, shots=2, validation="full")
    assert splits.count("val") == 2 * 4 * N_CLASSES and full["n_val_images"] == 4 * N_CLASSES
    assert set(splits[-n_test:]) == {"test"}


def test_the_fewshot_validation_set_is_nested_across_k_and_the_same_in_every_rerun(tmp_path):
    from datadream_core.classify.data import validation_examples
    from datadream_core.data.sources import DatasetError
    from datadream_core.data.table import ClassRow

    classes = [ClassRow(index, f"c{index}", f"c{index}", f"a photo of a c{index}") for index in range(3)]
    rows = [(f"{split}/c{c}_{i}.png", c, split) for c in range(3) for split, count in (("train", 9), ("val", 7), ("test", 5))
            for i in range(count)]
    write_csv(tmp_path / "splits.csv", SPLITS_HEADER, rows)
    drawn = {k: validation_examples(tmp_path / "splits.csv", classes, k, seed=3, validation="fewshot") for k in (1, 2, 4, 8, 16)}
    per_class = {k: [[e.path for e in examples if e.label == c] for c in range(3)] for k, examples in drawn.items()}
    assert [len(per_class[k][0]) for k in (1, 2, 4, 8, 16)] == [1, 2, 4, 4, 4]
    for small, large in ((1, 2), (2, 4), (4, 8)):
        assert all(per_class[large][c][:small] == per_class[small][c] for c in range(3))
    assert all(path.startswith("val/c") for examples in drawn.values() for path in (e.path for e in examples))
    assert validation_examples(tmp_path / "splits.csv", classes, 4, seed=3, validation="fewshot") == drawn[4]
    other_seed = validation_examples(tmp_path / "splits.csv", classes, 4, seed=4, validation="fewshot")
    assert {e.path for e in other_seed} != {e.path for e in drawn[4]}  # seeded, not simply the first images
    assert len(validation_examples(tmp_path / "splits.csv", classes, 4, seed=3, validation="full")) == 3 * 7
    write_csv(tmp_path / "short.csv", SPLITS_HEADER, [row for row in rows if not (row[2] == "val" and row[1] == 2 and row[0][-5] > "1")])
    with pytest.raises(DatasetError, match=r"short\.csv: few-shot validation set: class 'c2' \(index 2\) has 2 usable val images"):
        validation_examples(tmp_path / "short.csv", classes, 4, seed=3, validation="fewshot")


def test_a_step_budget_gives_every_train_set_the_same_optimiser_steps(world, tmp_path):
    # 64 real images at batch 16 are 4 steps an epoch: 10 steps are two whole epochs and half of a third.
    real = run(world, tmp_path / "real", "real", steps=10, batch_size=16, selection="val")
    assert (real["steps"], real["epochs"], real["steps_done"]) == (10, 3, [4, 8, 10])
    assert len(real["train_loss"]) == len(real["val_accuracy"]) == 3
    assert real["n_train_images"] == 64 and real["classify"]["epochs"] is None
    # 64 real + 8 x 4 synthetic images are 6 steps an epoch, and the same 10 steps.
    mixed = run(world, tmp_path / "mixed", "real+synth_sd", n_synth=4, steps=10, batch_size=16)
    assert (mixed["steps"], mixed["steps_done"], mixed["n_train_images"]) == (10, [6, 10], 96)
    # The recorded loss leaves mixed batches out: with every batch mixed, an epoch has none to show.
    all_mixed = run(world, tmp_path / "mixed_batches", "real", steps=4, batch_size=16, mix_prob=1.0)
    assert all_mixed["train_loss"] == [None]
    # Without a budget, epochs decide and the larger train set takes more steps.
    by_epochs = run(world, tmp_path / "epochs", "real+synth_sd", n_synth=4, epochs=2, batch_size=16)
    assert (by_epochs["steps"], by_epochs["steps_done"]) == (12, [6, 12])


def test_search_over_epochs_is_refused_under_a_step_budget():
    with pytest.raises(ConfigError, match=r"'classify.search.epochs' searches epochs, but 'classify.vpt.steps'"):
        validate_config({"datasets": {"world": {"source": "miniworld"}},
                         "classify": {"selection": "val", "vpt": {"steps": 50}, "search": {"epochs": [2, 4]}}})


def test_cached_evaluation_images_equal_the_test_transform(tmp_path):
    from PIL import Image

    from datadream_core.classify.data import EvalImages, Example, eval_transform

    rng = torch.Generator().manual_seed(0)
    examples = []
    for index, (size, mode, suffix) in enumerate([((50, 37), "RGB", "jpg"), ((37, 50), "RGB", "png"),
                                                  ((40, 40), "L", "png"), ((64, 33), "RGBA", "png"), ((33, 64), "RGB", "jpg")]):
        pixels = torch.randint(0, 256, (size[1], size[0], len(mode)), generator=rng, dtype=torch.uint8).squeeze(-1)
        path = tmp_path / f"{index}.{suffix}"
        Image.fromarray(pixels.numpy(), mode).save(path)
        examples.append(Example(str(path), index % 3, index % 2 == 0))
    mean, std = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)
    transform = eval_transform(32, mean, std)
    expected = torch.stack([transform(classify_data.load_rgb(e.path)) for e in examples])

    cached = EvalImages(examples, 32, mean, std, batch_size=2, workers=0, cache_mb=1)
    streamed = EvalImages(examples, 32, mean, std, batch_size=2, workers=0, cache_mb=0)
    too_large = EvalImages(examples, 32, mean, std, batch_size=2, workers=0, cache_mb=len(examples) * 3 * 32 * 32 / 2**20 / 2)
    assert (cached.cached, streamed.cached, too_large.cached) == (True, False, False)
    for images in (cached, streamed, cached):  # the second pass over the cache reads the kept pixels
        batches = list(images)
        assert [len(batch[0]) for batch in batches] == [2, 2, 1]
        assert torch.equal(torch.cat([batch[0] for batch in batches]), expected)  # bit for bit
        assert torch.cat([batch[1] for batch in batches]).tolist() == [e.label for e in examples]
        assert torch.cat([batch[2] for batch in batches]).tolist() == [e.is_real for e in examples]


def test_an_empty_val_split_falls_back_to_the_last_epoch(world, tmp_path):
    splits = tmp_path / "splits.csv"
    write_csv(splits, SPLITS_HEADER, [(r.path, r.class_index, r.split) for r in read_splits(world / "splits.csv") if r.split != "val"])
    metrics = run(world, tmp_path / "out", "real", splits=splits, selection="val", epochs=2)
    assert (metrics["selection"], metrics["requested_selection"], metrics["selected_epoch"]) == ("last", "val", 2)
    assert metrics["val_accuracy"] == []


@pytest.mark.e2e
@pytest.mark.parametrize("rule", ["train_classifier", "evaluate_zeroshot"])
def test_the_rules_job_function_runs_the_classifier(world, tmp_path, monkeypatch, rule):
    """The generic job runner hands the classifier rules' named files and params to run_classifier, the
    provenance completed with the data identity, the settings unwrapped."""
    from snakemake.iocontainers import Namedlist

    from datadream_core import jobs
    from datadream_core.config import SPEED_ONLY_KEYS, JobSettings, OutputNeutral
    from datadream_core.io import write_json

    monkeypatch.setattr(jobs, "start_snakemake_job", lambda snakemake, owned=(), offline=True: logging.getLogger("datadream"))
    config = validate_config({"datasets": {"world": {"source": "miniworld"}}, "classify": {**FAST, "epochs": 1},
                              "models": {"clip": {"name": os.environ["TINY_CLIP"], "pretrained": ""}}})
    identity = tmp_path / "identity.json"
    write_json(identity, {"data_identity": "world:test"})

    def job_params(trainset, shots, seed, n_synth):
        settings = JobSettings(method_settings(config["classify"], "lora", shots), SPEED_ONLY_KEYS["classify"])
        return Namedlist(fromdict=dict(
            job="datadream_core.classify.train:run_classifier", owned=[], dataset="world", trainset=trainset,
            shots=shots, seed=seed, n_synth=n_synth, settings=settings,
            provenance={"settings_digest": "d", "model_identity": "tiny"}, clip=OutputNeutral(config["models"]["clip"])))

    # What each rule hands the job: the zero-shot evaluation has no few-shot set or manifest.
    files = dict(classes_csv=str(world / "classes.csv"), splits_csv=str(world / "splits.csv"), identity=str(identity))
    if rule == "train_classifier":
        out = tmp_path / "results/world/clf/synth_sd/k8_seed0/n2"
        files.update(fewshot_csv=str(world / "fewshot.csv"), manifest_csv=str(world / "manifest.csv"))
        params = job_params("synth_sd", SHOTS, 0, 2)
    else:
        out = tmp_path / "results/world/clf/zeroshot"
        params = job_params("zeroshot", 0, 0, 0)
    outputs = dict(metrics_json=str(out / "metrics.json"), per_class_csv=str(out / "per_class.csv"),
                   cost=str(tmp_path / "cost.json"))
    snakemake = SimpleNamespace(rule=rule, input=Namedlist(fromdict=files), output=Namedlist(fromdict=outputs),
                                params=params, log=[str(tmp_path / "log")], threads=1, resources={})
    jobs.run_snakemake_job(snakemake)
    metrics = read_json(out / "metrics.json")
    assert metrics["made_from"] == {"settings_digest": "d", "model_identity": "tiny", "data_identity": "world:test"}
    assert metrics["classify"] == dict(params.settings)
    if rule == "train_classifier":
        assert (metrics["trainset"], metrics["n_synth"], metrics["n_train_images"]) == ("synth_sd", 2, 2 * N_CLASSES)
    else:
        assert (metrics["trainset"], metrics["shots"], metrics["n_train_images"]) == ("zeroshot", 0, 0)
        assert metrics["n_test_images"] == 10 * N_CLASSES


def test_a_rule_that_does_not_fit_its_job_function_fails_naming_every_argument():
    from datadream_core.jobs import check_job_arguments

    given = {"dataset": "w", "trainset": "real", "shots": 1, "seed": 0, "classes_csv": "c", "splits_csv": "s",
             "clip": {}, "settings": {}, "metrics_json": "m", "per_class": "p", "fewshot": "f"}
    with pytest.raises(TypeError) as error:
        check_job_arguments(run_classifier, given, "rule train_classifier (job datadream_core.classify.train:run_classifier)")
    assert str(error.value) == (
        "rule train_classifier (job datadream_core.classify.train:run_classifier) does not fit"
        " datadream_core.classify.train.run_classifier: missing arguments ['n_synth', 'per_class_csv'];"
        " arguments it does not take ['fewshot', 'per_class']")


KILLED_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from test_classify import run

run(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], n_synth=4, **%r)
"""


@pytest.mark.parametrize("trainset", ["real+synth_sd", "real+synth_sd/coop", "real/vpt"])
def test_a_killed_run_resumes_and_ends_like_an_uninterrupted_one(world, tmp_path, tiny_clip, final_lora, caplog, trainset):
    epochs = 4
    settings = {"epochs": epochs, "warmup_epochs": 1, "selection": "val", "workers": 1, "augment": "released", "mix_prob": 0.5}
    method = parse_trainset(trainset).method
    if method != "lora":
        settings[method] = {**METHOD_FAST[method][method], "epochs": epochs, "augment": "released", "mix_prob": 0.5}
    checkpoint = tmp_path / "checkpoint.pt"
    stderr = kill_once_written(KILLED_SCRIPT % settings, [str(REPO / "tests"), str(world), str(tmp_path), trainset],
                               checkpoint, tmp_path)
    assert checkpoint.exists(), f"no checkpoint appeared before the run ended:\n{stderr[-3000:]}"
    assert 1 <= torch.load(checkpoint, weights_only=True)["state"]["epoch"] < epochs
    assert not (tmp_path / "metrics.json").exists()

    with caplog.at_level(logging.INFO, logger="datadream"):
        resumed = run(world, tmp_path, trainset, n_synth=4, **settings)
    assert "resuming from" in caplog.text
    resumed_lora = dict(final_lora)
    whole = run(world, tmp_path / "whole", trainset, n_synth=4, **settings)
    for key in ("accuracy", "per_class_accuracy", "val_accuracy", "selected_epoch"):
        assert resumed[key] == whole[key], key
    assert resumed_lora.keys() == final_lora.keys()
    assert all(torch.equal(resumed_lora[name], final_lora[name]) for name in final_lora)


RULES_SNAKEFILE = """
from datadream_core.config import validate_config

config.update(validate_config(config))


include: "{rules}/common.smk"
include: "{rules}/data.smk"
include: "{rules}/classify.smk"


rule all:
    input:
        [classifier_targets(dataset) for dataset in DATASETS],
"""


@pytest.mark.e2e
def test_rule_plans_every_trainset_kind_and_reads_the_generator_manifest(tmp_path):
    (tmp_path / "Snakefile").write_text(RULES_SNAKEFILE.format(rules=REPO / "rules"), encoding="utf-8")
    config = {"seeds": [0], "shots": [2], "datasets": {"world": {"source": "miniworld"}},
              "synth": {"generators": ["datadream_dset"], "n_synth": 3}}
    (tmp_path / "config.yaml").write_text(json.dumps(config), encoding="utf-8")
    command = [sys.executable, "-m", "snakemake", "-s", "Snakefile", "--configfile", "config.yaml", "-n", "--cores", "1",
               "--quiet", "rules"]
    manifest = "results/world/synth/datadream_dset/k2_seed0/manifest.csv"
    missing = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert missing.returncode != 0 and manifest in missing.stdout + missing.stderr
    (tmp_path / manifest).parent.mkdir(parents=True)
    (tmp_path / manifest).write_text("path,class_index,image_index\n", encoding="utf-8")
    planned = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert planned.returncode == 0, planned.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", planned.stdout, re.MULTILINE))
    # zeroshot is evaluated once for the dataset and filed under k2_seed0; the three other kinds train
    assert (counts.get("train_classifier"), counts.get("evaluate_zeroshot"), counts.get("file_zeroshot")) == (
        "3", "1", "1"), planned.stdout


def _planned_outputs(tmp_path, config: dict) -> tuple[dict, str]:
    """Rule counts and the dry run's text of RULES_SNAKEFILE under `config`."""
    (tmp_path / "Snakefile").write_text(RULES_SNAKEFILE.format(rules=REPO / "rules"), encoding="utf-8")
    (tmp_path / "config.yaml").write_text(json.dumps(config), encoding="utf-8")
    planned = subprocess.run([sys.executable, "-m", "snakemake", "-s", "Snakefile", "--configfile", "config.yaml", "-n",
                              "--cores", "1", "-p"], cwd=tmp_path, capture_output=True, text=True)
    assert planned.returncode == 0, planned.stderr[-3000:] + planned.stdout[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", planned.stdout, re.MULTILINE))
    return counts, planned.stdout


@pytest.mark.e2e
def test_rule_plans_one_job_per_method_with_the_method_in_the_path(tmp_path):
    config = {"seeds": [0, 1], "shots": [2], "datasets": {"world": {"source": "miniworld"}},
              "classify": {"methods": ["lora", "coop", "vpt"], "trainsets": ["real"]}}
    counts, text = _planned_outputs(tmp_path, config)
    assert counts.get("train_classifier") == "6", text[-3000:]
    for method_dir in ("real/k2_seed0", "real/coop/k2_seed0", "real/vpt/k2_seed1"):
        assert f"results/world/clf/{method_dir}/n0/metrics.json" in text


@pytest.mark.e2e
def test_a_2x2_search_plans_4_point_jobs_per_run_and_one_choice(tmp_path):
    config = {"seeds": [0], "shots": [2], "datasets": {"world": {"source": "miniworld"}},
              "classify": {"methods": ["lora", "coop"], "trainsets": ["real"], "selection": "val",
                           "search": {"learning_rate": [0.001, 0.01], "weight_decay": [0.0, 0.0001]}}}
    counts, text = _planned_outputs(tmp_path, config)
    assert (counts.get("train_search_point"), counts.get("select_search_point"), counts.get("train_classifier")) == (
        "8", "2", None), text[-3000:]
    assert "results/world/clf/real/coop/k2_seed0/n0/search/lr0.01_wd0.0001/metrics.json" in text
    with pytest.raises(Exception, match="classify.search' needs classify.selection: val"):
        validate_config({**config, "classify": {**config["classify"], "selection": "last"}})


def test_the_search_files_the_point_with_the_best_validation_accuracy(tmp_path):
    from datadream_core.classify.search import select_search_point
    from datadream_core.classify.trainsets import search_points

    points = search_points({"learning_rate": [0.001, 0.01], "epochs": [5, 10]})
    assert list(points) == ["lr0.001_ep5", "lr0.001_ep10", "lr0.01_ep5", "lr0.01_ep10"]
    assert points["lr0.01_ep5"] == {"learning_rate": 0.01, "epochs": 5}
    val = {"lr0.001_ep5": 40.0, "lr0.001_ep10": 75.0, "lr0.01_ep5": 75.0, "lr0.01_ep10": 50.0}
    test = {"lr0.001_ep5": 90.0, "lr0.001_ep10": 60.0, "lr0.01_ep5": 70.0, "lr0.01_ep10": 99.0}
    metrics, per_class = {}, {}
    for name, values in points.items():
        folder = tmp_path / name
        write_csv(folder / "per_class.csv", ("class_index", "accuracy"), [(0, test[name])])
        (folder / "metrics.json").write_text(json.dumps({
            "accuracy": test[name], "selected_val_accuracy": val[name], "selection": "val",
            "classify": {"weight_decay": 0.0, **values}}))
        metrics[name], per_class[name] = folder / "metrics.json", folder / "per_class.csv"
    chosen = select_search_point(metrics, per_class, tmp_path / "run/metrics.json", tmp_path / "run/per_class.csv")
    # The best validation accuracy wins (the first in grid order on a tie), never the best test accuracy.
    assert (chosen["search_choice"], chosen["accuracy"]) == ("lr0.001_ep10", 60.0)
    assert [(p["point"], p["val_accuracy"], p["test_accuracy"]) for p in chosen["search"]] == [
        (name, val[name], test[name]) for name in points]
    assert read_json(tmp_path / "run/metrics.json") == chosen
    assert (tmp_path / "run/per_class.csv").read_bytes() == per_class["lr0.001_ep10"].read_bytes()
    (tmp_path / "lr0.01_ep5/metrics.json").write_text(json.dumps({"accuracy": 1.0, "selected_val_accuracy": None,
                                                                   "selection": "last", "classify": {}}))
    with pytest.raises(ValueError, match="lr0.01_ep5/metrics.json has no validation accuracy"):
        select_search_point(metrics, per_class, tmp_path / "x.json", tmp_path / "x.csv")


def test_searched_runs_that_chose_other_points_share_the_grid_settings_digest(tmp_path):
    from datadream_core.classify.search import select_search_point
    from datadream_core.report.tables import Run, provenance

    def searched_run(name: str, val: dict[str, float]) -> dict:
        metrics, per_class = {}, {}
        for point, accuracy in val.items():
            folder = tmp_path / name / point
            write_csv(folder / "per_class.csv", ("class_index", "accuracy"), [(0, accuracy)])
            (folder / "metrics.json").write_text(json.dumps({
                "accuracy": accuracy, "selected_val_accuracy": accuracy, "selection": "val",
                "classify": {"learning_rate": 0.001, "epochs": 5, "weight_decay": 0.0},
                "made_from": {"settings_digest": f"digest-of-{point}", "model_identity": "m", "data_identity": "d"}}))
            metrics[point], per_class[point] = folder / "metrics.json", folder / "per_class.csv"
        return select_search_point(metrics, per_class, tmp_path / name / "metrics.json", tmp_path / name / "per_class.csv")

    first = searched_run("seed0", {"a": 10.0, "b": 20.0})
    second = searched_run("seed1", {"a": 30.0, "b": 20.0})
    assert (first["search_choice"], second["search_choice"]) == ("b", "a")
    assert first["made_from"]["settings_digest"] == second["made_from"]["settings_digest"] not in ("digest-of-a",
                                                                                                     "digest-of-b")
    runs = [Run("w", "real", 2, seed, 0, filed["accuracy"], filed["made_from"])
            for seed, filed in enumerate((first, second))]
    assert provenance(runs, ["w"])[1] == []  # no "stale cells" warning
    other_grid = searched_run("seed2", {"a": 30.0, "c": 20.0})
    assert provenance(runs + [Run("w", "real", 2, 2, 0, 30.0, other_grid["made_from"])], ["w"])[1]


@pytest.mark.e2e
def test_a_2x2_search_runs_and_its_grid_reaches_the_report(tmp_path):
    """The real DAG on the smoke config's tiny models: 4 point jobs per run, the best-val point filed, the grid
    (every point's val and test accuracy, the choice marked) in results/summary/ and in report.html."""
    config = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    config["classify"].update(trainsets=["real"], methods=["lora", "coop"],
                              search={"learning_rate": [1.0e-3, 1.0e-2], "epochs": [1, 2]})
    config["scaling"] = {"n_synth": [], "shots": []}  # the scaling runs would be searched (and listed) too
    targets = ["results/summary/search_grid.csv", "results/summary/search_grid.html"]
    run_snakemake(tmp_path, config, *targets)
    run_snakemake(tmp_path, config, *targets, "--report", "report.html")
    points = ["lr0.001_ep1", "lr0.001_ep2", "lr0.01_ep1", "lr0.01_ep2"]
    rows = read_csv(tmp_path / targets[0])
    assert [(row["method"], row["trainset"], row["point"]) for row in rows] == [
        (method, "real", point) for method in ("coop", "lora") for point in points]
    for method, run in (("coop", "real/coop/k2_seed0/n0"), ("lora", "real/k2_seed0/n0")):
        grid = [row for row in rows if row["method"] == method]
        filed = json.loads((tmp_path / f"results/miniworld/clf/{run}/metrics.json").read_text())
        chosen = [row for row in grid if row["chosen"] == "True"]
        assert [row["point"] for row in chosen] == [filed["search_choice"]]
        assert float(chosen[0]["val_accuracy"]) == max(float(row["val_accuracy"]) for row in grid)
        assert float(chosen[0]["test_accuracy"]) == filed["accuracy"]
        for row in grid:  # each point's own job trained with its settings and reports its own accuracies
            point = json.loads((tmp_path / f"results/miniworld/clf/{run}/search/{row['point']}/metrics.json").read_text())
            assert (point["classify"]["learning_rate"], point["classify"]["epochs"]) == (
                float(row["learning_rate"]), int(row["epochs"]))
            assert (point["selected_val_accuracy"], point["accuracy"]) == (
                float(row["val_accuracy"]), float(row["test_accuracy"]))
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "search_grid.html" in report and "Classifier search: every grid point" in report


@pytest.mark.e2e
def test_zeroshot_is_evaluated_once_per_dataset_and_filed_under_every_run(tmp_path):
    (tmp_path / "Snakefile").write_text(RULES_SNAKEFILE.format(rules=REPO / "rules"), encoding="utf-8")
    config = {"seeds": [0, 1, 2], "shots": [1, 4], "datasets": {"world": {"source": "miniworld"}},
              "classify": {"trainsets": ["zeroshot"]}}
    (tmp_path / "config.yaml").write_text(json.dumps(config), encoding="utf-8")
    planned = subprocess.run([sys.executable, "-m", "snakemake", "-s", "Snakefile", "--configfile", "config.yaml", "-n",
                              "--cores", "1", "--quiet", "rules"], cwd=tmp_path, capture_output=True, text=True)
    assert planned.returncode == 0, planned.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", planned.stdout, re.MULTILINE))
    assert (counts.get("evaluate_zeroshot"), counts.get("file_zeroshot"), counts.get("train_classifier")) == (
        "1", "6", None), planned.stdout


def test_filing_the_zeroshot_evaluation_sets_the_run_and_keeps_the_result(tmp_path):
    from datadream_core.classify.zeroshot import file_zeroshot_for_run

    shared = tmp_path / "clf/zeroshot"
    write_csv(shared / "per_class.csv", ("class_index", "name", "correct", "total", "accuracy"), [(0, "a", 3, 4, 75.0)])
    (shared / "metrics.json").write_text(json.dumps({"trainset": "zeroshot", "shots": 0, "seed": 0, "accuracy": 75.0}))
    run = tmp_path / "clf/zeroshot/k4_seed2/n0"
    metrics = file_zeroshot_for_run(shared / "metrics.json", shared / "per_class.csv", 4, 2, run / "metrics.json",
                                    run / "per_class.csv")
    assert read_json(run / "metrics.json") == metrics
    assert (metrics["shots"], metrics["seed"], metrics["accuracy"]) == (4, 2, 75.0)
    assert (run / "per_class.csv").read_bytes() == (shared / "per_class.csv").read_bytes()
    (shared / "metrics.json").write_text(json.dumps({"trainset": "real", "accuracy": 75.0}))
    with pytest.raises(ValueError, match="not the zero-shot evaluation"):
        file_zeroshot_for_run(shared / "metrics.json", shared / "per_class.csv", 4, 2, tmp_path / "x.json", tmp_path / "x.csv")
    assert not (tmp_path / "x.json").exists()
