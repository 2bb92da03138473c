from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from datadream_core.data.miniworld import render_world
from datadream_core.dream import (LORA_FILE, TEXT_LORA_TARGETS, UNET_LORA_TARGETS, DreamSettings, Example, add_lora,
                                  adapted_modules, train_datadream)
from datadream_core.io import read_csv
from datadream_core.models.sd import load_sd_parts
from killed_runs import kill_once_written

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    rows = render_world(tmp_path_factory.mktemp("world"), "target", 32, {"train": 3}, seed=0)
    return [Example(path, f"a photo of a {['blicket', 'dax'][c]}") for path, c, _ in rows if c < 2]


def _expected(model, suffixes):
    return {name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and any(name.endswith("." + s) or name == s for s in suffixes)}


def test_lora_sits_exactly_on_the_attention_projections(tiny_sd):
    parts = load_sd_parts(tiny_sd)
    unet_expected = _expected(parts.unet, UNET_LORA_TARGETS)
    text_expected = _expected(parts.text_encoder, TEXT_LORA_TARGETS)
    params = add_lora(parts, DreamSettings(rank=4, alpha=4))
    # 2 cross-attention down blocks + 2 up blocks (x2 layers) + mid: self and cross attention each
    assert len(unet_expected) == 4 * 2 * 7 and len(text_expected) == 4 * 3
    assert adapted_modules(parts.unet) == unet_expected
    assert adapted_modules(parts.text_encoder) == text_expected
    trainable = {name for model in (parts.unet, parts.text_encoder) for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert sum(p.numel() for p in params) == sum(
        p.numel() for model in (parts.unet, parts.text_encoder) for p in model.parameters() if p.requires_grad)
    assert not any(p.requires_grad for p in parts.vae.parameters())


def test_sd21_base_lora_parameter_counts():
    from peft import LoraConfig

    from datadream_core.models.architectures import SD21_BASE_UNET, SD21_TEXT_ENCODER, build_text_encoder, build_unet

    with torch.device("meta"):
        unet, text_encoder = build_unet(SD21_BASE_UNET), build_text_encoder(SD21_TEXT_ENCODER)
    for model, targets in ((unet, UNET_LORA_TARGETS), (text_encoder, TEXT_LORA_TARGETS)):
        model.requires_grad_(False)
        model.add_adapter(LoraConfig(r=16, lora_alpha=16, init_lora_weights="gaussian", target_modules=list(targets)))
    count = lambda model: sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count(unet) == 3_319_808
    assert count(text_encoder) == 3_014_656


def test_loss_falls_when_overfitting(tiny_sd, shots, tmp_path):
    settings = DreamSettings(rank=8, alpha=8, batch_size=6, epochs=120, learning_rate=2e-3, warmup_steps=5)
    summary = train_datadream(tiny_sd, shots, tmp_path, settings, seed=0)
    losses = np.array([float(row["loss"]) for row in read_csv(tmp_path / "losses.csv")])
    assert summary["steps"] == 120 and len(losses) == 120
    assert losses[-30:].mean() < 0.8 * losses[:10].mean()


def test_adapter_loads_in_stock_diffusers(tiny_sd, shots, tmp_path):
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    train_datadream(tiny_sd, shots, tmp_path, DreamSettings(rank=4, alpha=4, batch_size=6, epochs=3, warmup_steps=1,
                                                            learning_rate=1e-2), seed=0)
    saved = load_file(tmp_path / LORA_FILE)
    assert {key.split(".")[0] for key in saved} == {"unet", "text_encoder"}
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None)
    unet_expected = _expected(pipe.unet, UNET_LORA_TARGETS)
    text_expected = _expected(pipe.text_encoder, TEXT_LORA_TARGETS)
    base = pipe(["a photo of a dax"], num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(0)).images
    pipe.load_lora_weights(str(tmp_path))
    loaded = get_peft_model_state_dict(pipe.unet, adapter_name=pipe.get_active_adapters()[0])
    unet_saved = {k: v for k, v in saved.items() if k.startswith("unet.")}
    assert len(loaded) == len(unet_saved) == 2 * 4 * 2 * 7
    assert adapted_modules(pipe.unet) == unet_expected and len(unet_expected) == 56
    assert adapted_modules(pipe.text_encoder) == text_expected and len(text_expected) == 12
    adapted = pipe(["a photo of a dax"], num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert np.abs(adapted - base).max() > 1e-3


def test_a_saved_adapter_holds_the_trained_delta_when_alpha_is_not_the_rank(tiny_sd, tmp_path):
    """The file has no alphas (loaders read alpha = rank), so alpha / rank is carried by the up factors."""
    from datadream_core.dream import save_lora
    from datadream_core.synth.text2img import load_lora_factors

    parts = load_sd_parts(tiny_sd)
    settings = DreamSettings(rank=4, alpha=12)
    add_lora(parts, settings)
    torch.manual_seed(0)
    for name, param in parts.unet.named_parameters():
        if "lora_B" in name:
            param.data.normal_()
    save_lora(parts, settings, tmp_path)
    factors = load_lora_factors(tmp_path, torch.device("cpu"))
    adapted = {name: module for name, module in parts.unet.named_modules() if hasattr(module, "get_delta_weight")}
    assert adapted and {module for model, module in factors if model == "unet"} == set(adapted)
    for name, module in adapted.items():
        down, up = factors[("unet", name)]
        trained = module.get_delta_weight("default")  # PEFT's (alpha / rank) B A
        assert torch.allclose(up @ down, trained, atol=1e-5) and trained.abs().max() > 0, name


TRAINING = dict(rank=4, alpha=4, batch_size=2, epochs=25, warmup_steps=3, learning_rate=1e-3, checkpoint_every=5)


def train(sd: str, out: str | Path, paths: list[str]) -> None:
    torch.set_num_threads(1)  # the killed run and the runs of this process compute alike
    train_datadream(sd, [Example(p, "a photo of a dax") for p in paths], out, DreamSettings(**TRAINING), seed=3)


KILLED_TRAINING = "import sys\nsys.path.insert(0, sys.argv[1])\nfrom test_dream import train\n\ntrain(sys.argv[2], sys.argv[3], sys.argv[4:])\n"


def test_killed_training_resumes_to_the_same_adapter(tiny_sd, shots, tmp_path):
    paths = [example.path for example in shots[:4]]
    train(tiny_sd, tmp_path / "whole", paths)
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    stderr = kill_once_written(KILLED_TRAINING, [str(REPO / "tests"), tiny_sd, str(tmp_path / "killed"), *paths],
                               checkpoint, tmp_path)
    assert checkpoint.exists() and not (tmp_path / "killed" / LORA_FILE).exists(), stderr[-3000:]
    resumed_from = torch.load(checkpoint, weights_only=True)["step"]
    assert 5 <= resumed_from < 50
    train(tiny_sd, tmp_path / "killed", paths)
    whole, resumed = load_file(tmp_path / "whole" / LORA_FILE), load_file(tmp_path / "killed" / LORA_FILE)
    assert whole.keys() == resumed.keys()
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=0, atol=1e-6)
    assert not checkpoint.exists()
    assert (tmp_path / "killed" / "losses.csv").read_text() == (tmp_path / "whole" / "losses.csv").read_text()
