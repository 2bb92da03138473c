"""Per-stage benchmarks: our path against the released code's behaviour (`reference`), on the same work.

    python benchmarks/run.py --quick                  # tiny models only (make bench-quick)
    python benchmarks/run.py --real-size              # tiny + real-size architectures, random weights (make bench)
    python benchmarks/run.py --device cuda --real-size

Writes a table to stdout and benchmarks/results.json (one `speedup` per stage, the machine, every timing).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models, few repetitions (a few minutes on 2 cores)")
    parser.add_argument("--real-size", action="store_true",
                        help="also run SD 2.1-base / ViT-B/16 architectures with random weights (reduced work on CPU)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results.json")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch/BLAS threads on CPU (default 1: on a shared machine more threads make timings erratic)")
    parser.add_argument("--stages", default="all", help="comma-separated subset of: lora,generation,classifier_eval,"
                                                        "classifier_train,fid,dag")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--skip-tiny", action="store_true", help="with --real-size: the real-size rows only")
    parser.add_argument("--reps", type=int, default=None,
                        help="timed repetitions of every row, in rotating order (default: each work size's own; "
                             "the real-size CPU rows run once)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    want_cuda = args.device == "cuda"
    threads = args.threads or 1
    if not want_cuda or args.threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)  # before numpy/torch load their BLAS
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.path.insert(0, str(REPO))

    import shutil
    import tempfile

    import torch

    from benchmarks import stages
    from benchmarks.harness import format_table, machine, quiet_libraries
    from datadream_core.io import write_json

    quiet_libraries()

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    if device.type == "cpu" or args.threads:
        torch.set_num_threads(threads)
    works = [] if args.skip_tiny and args.real_size else [stages.QUICK if args.quick else stages.FULL]
    if args.real_size:
        works.append(stages.REAL_GPU if device.type == "cuda" else stages.REAL_CPU)
    if args.reps:
        works = [replace(work, reps=args.reps, gen_reps=args.reps) for work in works]
    selected = list(stages.STAGES) if args.stages == "all" else [s.strip() for s in args.stages.split(",")]
    unknown = set(selected) - set(stages.STAGES)
    if unknown:
        print(f"unknown stages {sorted(unknown)}", file=sys.stderr)
        return 2

    root = args.workdir or Path(tempfile.mkdtemp(prefix="datadream-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows, errors = [], []
    try:
        for work in works:
            ctx = stages.Context(root, device, work)
            for name in selected:
                if work.real_size and name in ("fid", "dag"):
                    continue  # no model in these stages
                stage_started = time.perf_counter()
                print(f"[{work.name}] {name} ...", file=sys.stderr, flush=True)
                try:
                    new = stages.STAGES[name](ctx)
                except Exception as error:  # a stage that fails (e.g. out of memory) is reported, not fatal
                    import traceback

                    traceback.print_exc()
                    errors.append({"stage": name, "work": work.name, "error": repr(error)[:500]})
                    continue
                for row in new:
                    row["suite"] = work.name
                    row["stage_wall_s"] = time.perf_counter() - stage_started
                rows += new
                print(format_table(new), file=sys.stderr, flush=True)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    wall = time.perf_counter() - started

    table = format_table(rows)
    print(table)
    print(f"\nwall time {wall:.0f} s on {machine(device)['device_name']}, {torch.get_num_threads()} torch thread(s)")
    def speedups(kind):
        return {row["stage"]: row["speedup"] for row in rows
                if row.get("speedup") is not None and (row.get("ablation") and "ablation" or row.get("ceiling")
                                                       and "ceiling" or "speedup") == kind}

    result = {"mode": "quick" if args.quick else "full", "real_size": args.real_size, "wall_s": wall,
              "machine": machine(device), "speedup": speedups("speedup"), "ablation_speedup": speedups("ablation"),
              "ceiling_speedup": speedups("ceiling"), "stages": rows,
              "errors": errors, "table": table, "command": " ".join(sys.argv)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(f"results written to {args.out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
