"""The benchmark harness and the reference (released-code) paths it times: small and fast checks."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmarks/ is not an installed package

from benchmarks import gpu, models, reference, stages
from benchmarks.harness import Measured, PeakMemory, compare, format_table

CPU = torch.device("cpu")


def test_compare_interleaves_and_takes_medians():
    calls = []

    def ours():
        calls.append("o")
        return Measured(1.0, "ours output")

    def ref():
        calls.append("r")
        return Measured(3.0, "reference output")

    result = compare(ours, ref, reps=4, device=CPU, per=2)
    assert calls[:2] == ["o", "r"]  # untimed warm-up, one call each
    assert calls[2:] == ["r", "o", "o", "r", "r", "o", "o", "r"]  # the order alternates
    assert result.ours_s == [0.5] * 4 and result.reference_s == [1.5] * 4
    assert result.speedup == pytest.approx(3.0)
    assert (result.ours_out, result.reference_out) == ("ours output", "reference output")

    calls.clear()
    result = compare(ours, ref, reps=3, device=CPU, floor=lambda: calls.append("f") or Measured(0.5))
    assert calls == ["o", "r", "f", "r", "f", "o", "f", "o", "r", "o", "r", "f"]  # the floor joins the rotation
    assert result.floor_s == [0.5] * 3 and result.reference_out == "reference output"


def test_peak_memory_sees_a_large_cpu_tensor():
    with PeakMemory(CPU) as memory:
        block = torch.ones(64, 2**20 // 4)  # 64 MiB
        time.sleep(0.1)  # alive for 50 sampling periods: a busy machine may hold the sampling thread back for some
        del block
    assert memory.peak_mb >= 48


def test_table_has_one_line_per_row():
    rows = [{"stage": "a", "unit": "s", "ours_median_s": 1.0, "reference_median_s": 2.0, "speedup": 2.0,
             "peak_mb": {"ours": 1.0, "reference": 2.0}, "equal_text": "yes"},
            {"stage": "dag", "ours_median_s": 3.0, "equal_text": "5 jobs"},
            {"stage": "gen", "unit": "s", "ours_median_s": 1.0, "reference_median_s": 1.0, "speedup": 1.0,
             "peak_mb": {"ours": 900.0, "reference": 250.0},
             "memory_bound": {"targeted_base_weights_mb": 600.0, "bound_mb": 850.0, "within": False}}]
    table = format_table(rows).splitlines()
    assert len(table) == 5 and "2.00x" in table[2] and "| -" in table[3]
    assert "900 / 250 (<= 850: NO)" in table[4]


def test_fid_reference_and_ours_agree(tmp_path):
    work = stages.Work("test", fid=[(32, 2)])
    (row,) = stages.stage_fid(stages.Context(tmp_path, CPU, work))
    assert row["outputs_equal"] and row["speedup"] > 0


def test_benchmark_rows_time_the_products_functions_not_copies():
    import inspect

    from datadream_core import dream
    from datadream_core.synth import generate

    # the workflow's DataDream adapters (train_adapters -> train_datadream) are what the LoRA rows time
    assert "train_datadream" in dream.train_adapters.__code__.co_names
    assert "train_datadream(" in inspect.getsource(stages.lora.stage_lora)
    assert "train_datadream(" in inspect.getsource(gpu.lora_precision)
    assert "text2img_shards(" in inspect.getsource(stages.generation.ours_generate)
    assert generate.text2img_shards.__module__ == "datadream_core.synth.generate"


def test_benchmark_generation_job_writes_the_workflows_images(tiny_sd, tmp_path):
    from datadream_core.synth.text2img import SamplingSettings

    settings = SamplingSettings(steps=2, guidance_scale=2.0, scheduler=None, batch_size=2)
    paths = stages.generation.ours_generate(tiny_sd, [None, None], ["a photo of a dax", "a photo of a wug"], 3, settings, CPU,
                                 tmp_path / "gen", seed=4)
    assert [p.relative_to(tmp_path / "gen").as_posix() for p in paths] == [
        f"c{c:04d}/{name}" for c in (0, 1) for name in (p.name for p in paths[:3])]
    assert all(p.is_file() for p in paths) and len(set(paths)) == 6


def test_reference_lora_loop_matches_train_datadream(tiny_sd, tmp_path):
    from safetensors.torch import load_file

    from datadream_core.dream import DreamSettings, Example, train_datadream
    from datadream_core.io import read_csv
    from datadream_core.layout import LORA_FILE

    paths = models.write_images(tmp_path / "shots", 4, (32, 32), seed=0, fmt="jpg")  # square: no crop
    examples = [Example(path, "a photo of a dax") for path in paths]
    settings = DreamSettings(rank=4, alpha=4, batch_size=2, epochs=2, warmup_steps=1, learning_rate=1e-3)
    train_datadream(tiny_sd, examples, tmp_path / "ours", settings, seed=0, scope=1, device="cpu")
    ours = [float(line["loss"]) for line in read_csv(tmp_path / "ours" / "losses.csv")]
    released = reference.reference_train_lora(tiny_sd, examples, settings, 0, 1, CPU, tmp_path / "reference")
    assert len(ours) == len(released) == 4 and ours == pytest.approx(released, rel=1e-5)
    ours_w, released_w = load_file(tmp_path / "ours" / LORA_FILE), load_file(tmp_path / "reference" / LORA_FILE)
    assert set(ours_w) == set(released_w)
    assert all(torch.allclose(ours_w[key], released_w[key], atol=1e-6) for key in ours_w)


def test_reference_evaluation_predicts_what_ours_predicts(tiny_clip, tmp_path):
    from datadream_core.classify.data import EvalImages, Example, eval_transform
    from datadream_core.classify.lora import add_lora, truncate_context
    from datadream_core.classify.train import evaluate
    from datadream_core.models.clip import load_clip

    loaded = load_clip(tiny_clip)
    add_lora(loaded.model, ("q", "v"), 4, 8, 0.1)
    models.randomise_clip_lora(loaded.model, 0.05, seed=0)
    full = loaded.tokenize(models.class_prompts(12))
    paths = models.write_images(tmp_path / "test", 20, (40, 30), seed=1, fmt="jpg")
    examples = [Example(path, i % 12, True) for i, path in enumerate(paths)]
    transform = eval_transform(loaded.image_size, loaded.mean, loaded.std)
    settings = stages.classifier.classify_settings(eval_batch_size=64, workers=0)
    images = EvalImages(examples, loaded.image_size, loaded.mean, loaded.std, 64, 0)
    counts = evaluate(loaded.model, truncate_context(loaded.model, full), images, 12, settings, CPU, "t")
    predictions = reference.reference_evaluate(loaded.model, full, examples, transform, 100, CPU, "fp16")
    labels = torch.tensor([e.label for e in examples])
    assert counts.correct == torch.bincount(labels[predictions == labels], minlength=12).tolist()
    assert truncate_context(loaded.model, full).shape[1] < full.shape[1]


def test_gpu_benchmark_arguments():
    args = gpu.parse_args(["--tiny", "--stages", "lora, generation", "--out", "x.json"])
    assert args.stages == ["lora", "generation"] and args.out == Path("x.json")
    assert args.compile_backend == "eager"  # --tiny traces the UNet without inductor's C++ compile on a CPU
    defaults = gpu.parse_args([])
    assert defaults.stages == ["lora", "generation", "classifier_train", "classifier_eval", "generation_levers"]
    assert defaults.compile_backend == "inductor" and defaults.out == REPO / "benchmarks" / "results-gpu.json"
    with pytest.raises(SystemExit):
        gpu.parse_args(["--stages", "lora,fid"])


def test_gpu_benchmark_runs_a_tiny_stage_end_to_end(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "benchmarks/gpu.py", "--tiny", "--device", "cpu", "--stages", "lora",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["complete"] and result["mode"] == "tiny" and not result["errors"] and not result["skipped"]
    assert result["device_name"].startswith("CPU") and result["goals"]["generation_images_per_s"] is None
    rows = result["stages"]
    assert [row["stage"] for row in rows] == ["lora train step, fp32 (tiny)", "lora train step, tf32 (tiny)",
                                              "lora train step, bf16 (tiny)"]
    assert all(row["outputs_equal"] and len(row["ours_s"]) == len(row["reference_s"]) == 2 for row in rows)
    assert rows[0]["speedup_vs_released"] == pytest.approx(rows[0]["speedup"])
    assert set(result["goals"]["speedup_vs_released"]) == {row["stage"] for row in rows}
    assert "[step/s]" in done.stdout and "vs released as shipped" in done.stdout
