"""Build the miniature world's base models from a seed: render SOURCE data, train VAE, SD and CLIP.

Writes `out_dir/sd/` (a StableDiffusionPipeline folder for `load_sd_parts` / `load_sd_pipeline`),
`out_dir/clip/` (an open_clip folder for `load_clip`) and `out_dir/build.json` (seed, settings,
wall times, losses, checks). Weights are stored in fp16 so the folders stay small enough to ship.

Each stage's result is kept under `out_dir/.stages/` until the build finishes, so a rerun after a
kill resumes at the first unfinished stage. Run as a script:

    python -m datadream_core.models.build_miniworld_models OUT_DIR [--seed 0] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from datadream_core.data.miniworld import WORLD_CLASSES, render_generic, render_image, render_source
from datadream_core.io import LOG, atomic_folder, read_json, write_json
from datadream_core.models.pretrain import (CLIPSettings, SDSettings, VAESettings, clip_zero_shot, encode_latents,
                                            reconstruction_psnr, scaling_factor, train_clip, train_sd, train_vae)
from datadream_core.seeding import seeded_rng


@dataclass(frozen=True, kw_only=True)
class BuildBudget:
    """How much source data and how many optimiser steps each model gets."""

    source_images: int = 24000
    class_fraction: float = 0.3
    generic_images: int = 12000  # random colours and shapes, for the VAE only (a general codec)
    vae: VAESettings
    sd: SDSettings
    clip: CLIPSettings
    half: bool = True  # store fp16 weights
    check_images: int = 50  # per class, for the PSNR / zero-shot checks in build.json


DEFAULT_BUDGET = BuildBudget(
    vae=VAESettings(steps=1000, batch_size=16, learning_rate=3e-3, weight_decay=1e-4),
    sd=SDSettings(steps=2000, batch_size=64, learning_rate=1e-3, weight_decay=1e-2),
    clip=CLIPSettings(steps=1000, batch_size=128, learning_rate=1e-3, weight_decay=0.1),
)
QUICK_BUDGET = BuildBudget(  # seconds, for tests: the models are untrained but load like the real ones
    source_images=256, generic_images=64,
    vae=replace(DEFAULT_BUDGET.vae, steps=2, batch_size=8, learning_rate=2e-3),
    sd=replace(DEFAULT_BUDGET.sd, steps=2, batch_size=8),
    clip=replace(DEFAULT_BUDGET.clip, steps=2, batch_size=16), check_images=2,
)


def _budget_dict(budget: BuildBudget) -> dict:
    return asdict(budget)


def _check_images(domain: str, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for class_index, cls in enumerate(WORLD_CLASSES):
        for i in range(count):
            rng = seeded_rng(seed, 99, class_index, i, len(domain))
            images.append(np.asarray(render_image(cls, domain, 32, rng)))
            labels.append(class_index)
    return np.stack(images), np.array(labels)


def _reuse_or_train(name: str, info_file: Path, model_file: Path, train: Callable[[], dict]) -> dict:
    """A build stage's info: read back when an earlier run finished the stage, else from `train` (which saves the
    model to `model_file`'s folder). The info file is written after the model, so a kill in between retrains."""
    if info_file.is_file() and model_file.is_file():
        LOG.info("%s: reusing %s", name, model_file.parent)
        return read_json(info_file)
    info = train()
    write_json(info_file, info)
    return info


def build_miniworld_models(out_dir: str | Path, seed: int = 0, budget: BuildBudget = DEFAULT_BUDGET,
                           threads: int | None = None, keep_stages: bool = False) -> dict:
    """Render the source world, train VAE -> SD -> CLIP, write out_dir/{sd,clip,build.json}; return build.json."""
    from diffusers import AutoencoderKL

    from datadream_core.models.tiny import save_clip_folder, save_sd_folder, tiny_tokenizer

    if threads:
        torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    stages = out_dir / ".stages"
    stages.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report: dict = {"seed": seed, "budget": _budget_dict(budget), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "wall_seconds": {}}

    clock = time.perf_counter()
    source = render_source(budget.source_images, 32, seed, budget.class_fraction)
    report["wall_seconds"]["render"] = time.perf_counter() - clock
    report["source_captions_distinct"] = len(set(source.captions))
    LOG.info("rendered %d source images (%d distinct captions)", len(source.captions), report["source_captions_distinct"])
    source_check, _ = _check_images("source", budget.check_images, seed)
    target_check, target_labels = _check_images("target", budget.check_images, seed)

    def vae_stage() -> dict:
        clock = time.perf_counter()
        codec_images = np.concatenate([source.images, render_generic(budget.generic_images, 32, seed)])
        vae, losses = train_vae(codec_images, budget.vae, seed)
        wall = time.perf_counter() - clock
        means, stds = encode_latents(vae, source.images[:4096])
        vae.register_to_config(scaling_factor=scaling_factor(means, stds, seed))
        info = {"wall_seconds": wall, "final_loss": losses[-1][1], "final_mse": losses[-1][2],
                "loss_curve": [round(row[1], 5) for row in losses[:: max(1, len(losses) // 50)]],
                "scaling_factor": vae.config.scaling_factor,
                "psnr_source": reconstruction_psnr(vae, source_check), "psnr_target": reconstruction_psnr(vae, target_check)}
        with atomic_folder(vae_dir) as staging:
            vae.save_pretrained(staging)
        LOG.info("VAE: %.0f s, PSNR source %.1f dB, target %.1f dB", wall, info["psnr_source"], info["psnr_target"])
        return info

    def sd_stage() -> dict:
        clock = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            tokenizer = tiny_tokenizer(scratch)
        latents = encode_latents(vae, source.images)
        unet, text_encoder, scheduler, losses = train_sd(vae, tokenizer, source.images, source.captions, budget.sd,
                                                         seed, latents=latents)
        wall = time.perf_counter() - clock
        save_sd_folder(sd_dir, vae, unet, text_encoder, tokenizer, scheduler, half=budget.half)
        info = {"wall_seconds": wall, "final_loss": float(np.mean([row[1] for row in losses[-50:]])),
                "loss_curve": [round(row[1], 5) for row in losses[:: max(1, len(losses) // 50)]]}
        LOG.info("SD: %.0f s, final loss %.4f", wall, info["final_loss"])
        return info

    def clip_stage() -> dict:
        clock = time.perf_counter()
        model, losses = train_clip(source, budget.clip, seed)
        wall = time.perf_counter() - clock
        save_clip_folder(clip_dir, model, half=budget.half)
        prompts = [f"a photo of a {cls.name}" for cls in WORLD_CLASSES]
        coarse = [f"a photo of a {cls.coarse}" for cls in WORLD_CLASSES]
        pair = target_labels // 2  # the two classes of a pair share shape and colour
        info = {"wall_seconds": wall, "final_loss": float(np.mean([row[1] for row in losses[-50:]])),
                "loss_curve": [round(row[1], 4) for row in losses[:: max(1, len(losses) // 50)]],
                "zero_shot_target_class_names": clip_zero_shot(model, target_check, target_labels, prompts),
                "zero_shot_target_pairs": clip_zero_shot(model, target_check, pair, coarse[::2])}
        LOG.info("CLIP: %.0f s, zero-shot on target %.1f %% (classes), %.1f %% (pairs)", wall,
                 info["zero_shot_target_class_names"], info["zero_shot_target_pairs"])
        return info

    # VAE -> UNet + text encoder (saved with the VAE as a StableDiffusionPipeline folder) -> CLIP
    vae_dir, sd_dir, clip_dir = stages / "vae", out_dir / "sd", out_dir / "clip"
    report["vae"] = _reuse_or_train("VAE", vae_dir / "stage.json", vae_dir / "config.json", vae_stage)
    vae = AutoencoderKL.from_pretrained(vae_dir).requires_grad_(False).eval()
    report["sd"] = _reuse_or_train("SD", stages / "sd.json", sd_dir / "model_index.json", sd_stage)
    report["clip"] = _reuse_or_train("CLIP", stages / "clip.json", clip_dir / "open_clip_config.json", clip_stage)
    for stage in ("vae", "sd", "clip"):
        report["wall_seconds"][stage] = report[stage]["wall_seconds"]

    report["wall_seconds"]["total_this_run"] = time.perf_counter() - started
    report["size_bytes"] = sum(path.stat().st_size for folder in (sd_dir, clip_dir) for path in folder.rglob("*") if path.is_file())
    write_json(out_dir / "build.json", report)
    if not keep_stages:
        shutil.rmtree(stages, ignore_errors=True)
    return report


def build_miniworld_models_job(build_json: str | Path, budget: str, seed: int, threads: int = 1) -> None:
    """The models of `build_json`'s folder under the `budget` named "full" or "quick"."""
    report = build_miniworld_models(Path(build_json).parent, seed, QUICK_BUDGET if budget == "quick" else DEFAULT_BUDGET,
                                    threads)
    LOG.info("miniworld base models built in %.0f s: %s", report["wall_seconds"]["total_this_run"], report["wall_seconds"])


def main(argv: list[str] | None = None) -> None:
    from datadream_core.jobs import start_job

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a few steps per model (seconds): for tests")
    parser.add_argument("--log", default=None)
    parser.add_argument("--keep-stages", action="store_true", help="keep out_dir/.stages (the trained VAE) afterwards")
    args = parser.parse_args(argv)
    start_job(args.log, args.threads)
    report = build_miniworld_models(args.out_dir, args.seed, QUICK_BUDGET if args.quick else DEFAULT_BUDGET, args.threads,
                                    keep_stages=args.keep_stages)
    print(json.dumps(report["wall_seconds"], indent=2))


if __name__ == "__main__":
    main()
