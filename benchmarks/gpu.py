"""The GPU benchmark in one call: real-size architectures with random weights at 512 px.

    python benchmarks/gpu.py                     # on a GPU: SD 2.1-base and ViT-B/16, 6 to 7 minutes on an H100
    python benchmarks/gpu.py --tiny --out x.json # the same code path on tiny models (a CPU does it in 2 to 3 minutes)

Stages, each ours against the released code's behaviour (benchmarks/reference.py):
- lora: one cls adapter's run (batch 8, rank 16, UNet + text encoder) in fp32, TF32 and bf16 autocast with fp32 LoRA
  weights, per step;
- generation: a cls job over several classes (50 steps, CFG 2.0, batch 10, fp16, SDPA), one pipeline against a
  reload per class, with the floor of its UNet calls;
- classifier_train / classifier_eval: a train step (batch 64, fp16) and an evaluation (batch 256), 100 and 1000 classes;
- generation_levers: torch.compile(unet) and channels_last, each against our sampler without it.

Prints a table in steps/s and images/s and writes JSON (benchmarks/results-gpu.json by default) after every stage,
so a run stopped by its time limit keeps what it measured. `benchmarks/gpu_run.sh` installs the carried wheels first.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # benchmarks/ and datadream_core/ need not be installed
# Before the model libraries load: the GPU machine has no network, and progress bars would bury the table.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import models, reference, stages  # noqa: E402
from benchmarks.harness import compare, time_once  # noqa: E402
from benchmarks.stages.common import Context, Work, fresh, table_row  # noqa: E402
from benchmarks.stages.generation import gen_settings  # noqa: E402

# Sized to end within about 7 minutes on an H100 (an estimate: no GPU has run it yet), model building and
# torch.compile included; the generation job times its first run of each path (no untimed warm-up) to fit.
GPU = Work("gpu", real_size=True, reps=2, lora_images=16, lora_image_size=(640, 512), lora_epochs=2, lora_batch=8,
           lora_resolution=512, gen_classes=3, gen_images=10, gen_steps=50, gen_batch=10, gen_reps=2,
           gen_warmup=False, gen_parts=False, eval_classes=(100, 1000), eval_images=256, eval_epochs=2,
           train_classes=(100, 1000), train_batch=64, train_steps=3, fid=[])
# The same stages on the tiny models, with less work.
TINY = Work("gpu-tiny", reps=2, lora_images=8, lora_image_size=(80, 64), lora_epochs=1, lora_batch=8,
            gen_classes=2, gen_images=4, gen_steps=10, gen_batch=4, gen_reps=2, gen_warmup=False, gen_parts=False,
            eval_classes=(100, 1000), eval_images=64, eval_epochs=2, train_classes=(100, 1000), train_batch=64,
            train_steps=2, fid=[])

PRECISIONS = ("fp32", "tf32", "bf16")
LEVER_REPS = 3  # timed sampler calls per side of a generation lever
GENERATION_TARGET_IMAGES_PER_S = 5.0  # the goal on an H100
SPEEDUP_TARGET = 2.0  # the goal per stage, against the released code as it shipped


@contextmanager
def matmul_precision(precision: str):
    """fp32: torch's defaults, as the released training ran (its --allow_tf32 unset); tf32: matrix products in TF32."""
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved)


def lora_precisions(ctx: Context) -> list[dict]:
    """One cls adapter's run in each precision, ours against the released loop at the same precision; each row
    also gives ours against the released loop in fp32, the precision it shipped with (speedup_vs_released)."""
    from datadream_core.dream import DreamSettings, Example

    work = ctx.work
    sd = models.build_sd(ctx.root / f"sd_{ctx.tag}", work.real_size)
    paths = models.write_images(ctx.dir("lora_shots"), work.lora_images, work.lora_image_size, seed=1, fmt="jpg")
    examples = [Example(path, "a photo of a dax") for path in paths]  # mode cls: one class, one prompt
    rows = []
    for precision in PRECISIONS:
        settings = DreamSettings(rank=16, alpha=16, batch_size=work.lora_batch, epochs=work.lora_epochs,
                                 resolution=work.lora_resolution, checkpoint_every=10**9,
                                 mixed_precision="bf16" if precision == "bf16" else "no")
        rows.append(lora_precision(ctx, sd, examples, settings, precision,
                                   released_s=rows[0]["reference_median_s"] if rows else None))
        _free_memory(ctx.device)
    return rows


def lora_precision(ctx: Context, sd: str, examples, settings, precision: str, released_s: float | None) -> dict:
    """Both paths' whole adapter runs in `precision`, from the same LoRA initialisation and per-step randomness,
    so their losses can be compared. `released_s`: the released loop's time per step in fp32 (None: this is fp32)."""
    from datadream_core.dream import train_datadream
    from datadream_core.io import read_csv
    from datadream_core.models.sd import compute_dtype

    half = compute_dtype(settings.mixed_precision, ctx.device)  # train_datadream's: fp32 on a CPU
    steps = settings.epochs * math.ceil(len(examples) / settings.batch_size)
    ours_dirs, ref_dirs = fresh(ctx.dir(f"lora_{precision}_ours")), fresh(ctx.dir(f"lora_{precision}_reference"))

    def ours():
        with matmul_precision(precision):
            out_dir = ours_dirs()
            train_datadream(sd, examples, out_dir, settings, seed=ctx.seed, scope=1, device=str(ctx.device))
            return [float(line["loss"]) for line in read_csv(out_dir / "losses.csv")]

    def released():
        with matmul_precision(precision):
            return reference.reference_train_lora(sd, examples, settings, ctx.seed, 1, ctx.device, ref_dirs(), half)

    result = compare(ours, released, ctx.work.reps, ctx.device, per=steps)
    tolerance = {"loss_rel": 5e-2}  # latent crops against pixel crops (about 1e-3), plus bf16 rounding
    difference = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(result.ours_out, result.reference_out))
    equal = difference <= tolerance["loss_rel"]
    return table_row(
        f"lora train step, {precision} ({ctx.tag})", result, "s/step", equal,
        f"{'yes' if equal else 'NO'} (loss rel {difference:.1e})",
        {"precision": precision, "batch": settings.batch_size, "rank": settings.rank,
         "resolution": settings.resolution or "model", "text_encoder_lora": True, "steps_timed": steps,
         "image_size": ctx.work.lora_image_size, "frozen_weights": "bf16" if half else "fp32", "lora_weights": "fp32",
         "reference": "the released loop (VAE encode of pixel crops, text encoder on every prompt) at this precision",
         "timed": "whole adapter runs (model load, latent cache, steps, adapter file) / steps"},
        tolerance=tolerance, speedup_vs_released=(released_s or result.reference_median) / result.ours_median)


def use_channels_last(pipe) -> None:
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)


def compile_unet(pipe, backend: str = "inductor") -> None:
    pipe.unet = torch.compile(pipe.unet, backend=backend)


def generation_levers(ctx: Context, compile_backend: str) -> list[dict]:
    """torch.compile(unet) and channels_last, each on our sampler (one pipeline, adapter fused) against the same
    sampler without it: one batch of images per call, so the pipeline load is not in the time."""
    from datadream_core.synth.sampler import image_generator
    from datadream_core.synth.text2img import AdapterSwitcher, load_text2img, text2img_renderer

    work = ctx.work
    sd = models.build_sd(ctx.root / f"sd_{ctx.tag}", work.real_size)
    adapters = models.build_adapters(sd, ctx.root / f"adapters_{ctx.tag}", work.gen_classes, rank=16,
                                     b_std=0.002 if work.real_size else 0.02)
    prompt = models.class_prompts(1)[0]
    settings = gen_settings(ctx)
    n_images = work.gen_batch

    def sampler(prepare=None):
        switcher = AdapterSwitcher(load_text2img(sd, settings, ctx.device))
        embeddings = switcher.use(adapters[0], prompt)
        if prepare:
            prepare(switcher.pipe)
        render = text2img_renderer(switcher.pipe, settings, embeddings)
        return lambda: render([prompt] * n_images, [image_generator(ctx.seed, 0, i) for i in range(n_images)],
                              list(range(n_images)))

    plain = sampler()
    levers = [("channels_last vs contiguous", use_channels_last),
              (f"torch.compile(unet, backend={compile_backend}) vs eager",
               lambda pipe: compile_unet(pipe, backend=compile_backend))]
    rows = []
    for label, prepare in levers:
        stage = f"ablation gen: {label} ({ctx.tag})"
        try:
            lever = sampler(prepare)
            # The first calls warm up (and compile, where the lever compiles); compile time is recorded, not timed.
            (first_call_s,), _ = time_once(lever, 1, ctx.device)
            time_once(plain, 1, ctx.device)
            result = compare(lever, plain, LEVER_REPS, ctx.device, per=n_images, warmup=False)
        except Exception as error:  # an optional lever (torch.compile) may not work on this machine
            rows.append({"stage": stage, "unit": "s/image", "error": repr(error)[:300], "equal_text": "n/a (failed)"})
            continue
        finally:
            lever = None
            _free_memory(ctx.device)
        images = [np.asarray(im, dtype=np.int16) for im in result.ours_out], [np.asarray(im, dtype=np.int16) for im in result.reference_out]
        max_diff = max(int(np.abs(a - b).max()) for a, b in zip(*images))
        equal = max_diff <= 8  # fp16 kernels of another memory layout or compiled fusion round differently
        rows.append(table_row(stage, result, "s/image", equal, f"{'yes' if equal else 'NO'} (px max|d| {max_diff}/255)",
                                {"images": n_images, "batch": n_images, "steps": work.gen_steps,
                                 "first_call_s": first_call_s, "note": "ours = lever on, reference = lever off; "
                                 "sampling only (pipeline loaded once per side)"}, ablation=True))
    return rows


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def stage_functions(compile_backend: str) -> dict:
    """In the order they run: the target stages first, the generation levers last (compiling takes longest)."""
    return {
        "lora": lora_precisions,
        "generation": stages.stage_generation,
        "classifier_train": stages.stage_classifier_train,
        "classifier_eval": stages.stage_classifier_eval,
        "generation_levers": lambda ctx: generation_levers(ctx, compile_backend),
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny models and less work: checks the whole path on a CPU")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results-gpu.json")
    parser.add_argument("--stages", default="all",
                        help="comma-separated subset of: " + ",".join(stage_functions("inductor")))
    parser.add_argument("--budget-s", type=float, default=360.0,
                        help="start no stage after this many seconds: the last one (compiling) may take 3 minutes more")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend of the generation lever (default: inductor; eager with --tiny, "
                             "which traces the UNet as inductor would but skips the minute of C++ compilation on a CPU)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on a CPU (default 1: a shared machine)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one, deleted)")
    args = parser.parse_args(argv)
    args.compile_backend = args.compile_backend or ("eager" if args.tiny else "inductor")
    known = stage_functions(args.compile_backend)
    args.stages = list(known) if args.stages == "all" else [name.strip() for name in args.stages.split(",")]
    unknown = sorted(set(args.stages) - set(known))
    if unknown:
        parser.error(f"unknown stages {unknown}; known: {', '.join(known)}")
    return args


def summary(rows: list[dict]) -> dict:
    """The goal figures: generation images/s, and each stage's speedup against the released code."""
    job = next((row for row in rows if row["stage"].startswith("generation, cls job") and "ours_median_s" in row), None)
    against_released = {row["stage"]: row["speedup_vs_released"] for row in rows
                        if row.get("speedup_vs_released") is not None}
    return {"generation_images_per_s": None if job is None else 1.0 / job["ours_median_s"],
            "generation_target_images_per_s": GENERATION_TARGET_IMAGES_PER_S,
            "speedup_vs_released": against_released, "speedup_target": SPEEDUP_TARGET,
            "stages_meeting_speedup_target": sorted(s for s, v in against_released.items() if v >= SPEEDUP_TARGET)}


def main(argv=None) -> int:
    args = parse_args(argv)
    from benchmarks.harness import format_table, machine, quiet_libraries
    from datadream_core.io import write_json

    quiet_libraries()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    info = machine(device)
    print(f"{info['device_name']}: torch {info['torch']}, diffusers {info.get('diffusers')}, transformers "
          f"{info.get('transformers')}, peft {info.get('peft')}, open_clip {info.get('open_clip')}", file=sys.stderr)
    work = TINY if args.tiny else GPU
    functions = stage_functions(args.compile_backend)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="datadream-gpu-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    ctx = Context(root, device, work)
    started = time.perf_counter()
    rows, errors, skipped = [], [], []

    def write(complete: bool) -> dict:
        for row in rows:  # the other stages' references are the released behaviour at the released precision
            if row.get("speedup_vs_released") is None and not (row.get("ablation") or row.get("ceiling")):
                row["speedup_vs_released"] = row.get("speedup")
        table = format_table(rows, rates=True)
        result = {"mode": "tiny" if args.tiny else "real", "complete": complete, "device_name": info["device_name"],
                  "machine": machine(device), "wall_s": time.perf_counter() - started, "budget_s": args.budget_s,
                  "compile_backend": args.compile_backend, "work": work.name, "goals": summary(rows), "stages": rows,
                  "skipped": skipped, "errors": errors, "table": table, "command": " ".join(sys.argv)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, result)
        return result

    try:
        for name in args.stages:
            elapsed = time.perf_counter() - started
            if elapsed > args.budget_s:
                skipped.append({"stage": name, "reason": f"budget: {elapsed:.0f} s of {args.budget_s:.0f} s spent"})
                continue
            print(f"[{work.name}] {name} ... ({elapsed:.0f} s so far)", file=sys.stderr, flush=True)
            stage_started = time.perf_counter()
            try:
                new = functions[name](ctx)
            except Exception as error:  # a stage that fails (e.g. out of memory) is reported, not fatal
                import traceback

                traceback.print_exc()
                errors.append({"stage": name, "error": repr(error)[:500]})
                new = []
            for row in new:
                row["stage_wall_s"] = time.perf_counter() - stage_started
            rows += new
            _free_memory(device)
            print(format_table(new, rates=True) if new else f"{name}: no rows", file=sys.stderr, flush=True)
            write(complete=False)
        result = write(complete=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(result["table"])
    goals = result["goals"]
    rate = goals["generation_images_per_s"]
    print(f"\ngeneration: {'-' if rate is None else f'{rate:.2f}'} images/s (goal {GENERATION_TARGET_IMAGES_PER_S} on an H100);"
          f" at >= {SPEEDUP_TARGET}x the released code: {len(goals['stages_meeting_speedup_target'])} of "
          f"{len(goals['speedup_vs_released'])} rows")
    print(f"wall time {result['wall_s']:.0f} s on {result['device_name']}; results written to {args.out}")
    return 1 if errors or skipped else 0


if __name__ == "__main__":
    sys.exit(main())
