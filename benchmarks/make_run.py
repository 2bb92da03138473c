"""`make run` timed as a newcomer meets it: a fresh clone of this checkout's HEAD with `.venv` already made,
run once or more, one run after the other; prints a table and writes JSON.

Each run's row holds its wall time, its jobs, and the jobs' own CPU time per rule from their cost records
(results/benchmarks/, what the report's compute table reads), so that the CPU floor on these cores
(job CPU / cores) stands beside the wall time. The load average before each run says whether the machine was idle.

    .venv/bin/python benchmarks/make_run.py --runs 2 --out benchmarks/results-make-run.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fresh_clone(scratch: Path) -> Path:
    """A clone of HEAD whose `.venv` is this checkout's, marked as installed (as after `make run`'s first step)."""
    clone = scratch / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    (clone / ".venv").symlink_to(REPO / ".venv")
    return clone


def job_costs(results: Path) -> dict[str, dict]:
    """Jobs, wall and CPU seconds and peak memory per rule, from the run's cost records."""
    per_rule: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0, "max_rss_mb": 0.0})
    for record in sorted((results / "benchmarks").rglob("*.json")):
        cost = json.loads(record.read_text())
        row = per_rule[record.relative_to(results / "benchmarks").parts[0]]
        row["jobs"] += 1
        row["wall_s"] += cost["wall_s"]
        row["cpu_s"] += cost["cpu_s"]
        row["max_rss_mb"] = max(row["max_rss_mb"], cost["max_rss_mb"])
    return {rule: {key: round(value, 1) for key, value in row.items()} for rule, row in sorted(per_rule.items())}


def time_make_run(clone: Path, cores: int) -> dict:
    load = os.getloadavg()
    # PYTHONPATH: the shared .venv's editable install names the original checkout, the clone's code must run
    env = {**os.environ, "PYTHONPATH": str(clone)}
    (REPO / ".venv/.installed").touch()  # newer than the clone's pyproject.toml: make does not reinstall
    started = time.perf_counter()
    done = subprocess.run(["make", "run", f"CORES={cores}"], cwd=clone, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"make run failed in {clone}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    steps = re.findall(r"(\d+) of (\d+) steps \(100%\) done", done.stdout + done.stderr)
    costs = job_costs(clone / "results")
    cpu = sum(row["cpu_s"] for row in costs.values())
    return {"wall_s": round(wall, 1), "jobs": int(steps[-1][1]) if steps else None,
            "load_average_before": [round(value, 2) for value in load], "job_cpu_s": round(cpu, 1),
            "cpu_floor_s": round(cpu / cores, 1), "per_rule": costs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the clones (their results and report.html)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results-make-run.json"))
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    runs = []
    for index in range(args.runs):
        scratch = Path(tempfile.mkdtemp(prefix=f"make_run_bench_{index}_"))
        runs.append({"clone": str(scratch / "clone"), **time_make_run(fresh_clone(scratch), args.cores)})
        if not args.keep:
            subprocess.run(["rm", "-rf", str(scratch)], check=True)
        print(f"run {index + 1}: {runs[-1]['wall_s']} s, {runs[-1]['jobs']} jobs", file=sys.stderr)
    result = {"commit": commit, "cores": args.cores, "cpu_count": os.cpu_count(),
              "machine": platform.processor() or platform.machine(), "runs": runs}
    rules = sorted({rule for run in runs for rule in run["per_rule"]})
    print(f"{'rule':<22}" + "".join(f" | run {i + 1}: jobs  CPU s  peak MB" for i in range(len(runs))))
    for rule in rules:
        cells = [run["per_rule"].get(rule, {"jobs": 0, "cpu_s": 0.0, "max_rss_mb": 0.0}) for run in runs]
        print(f"{rule:<22}" + "".join(f" | {c['jobs']:>11} {c['cpu_s']:>6} {c['max_rss_mb']:>8}" for c in cells))
    for i, run in enumerate(runs):
        print(f"run {i + 1}: make run {run['wall_s']} s wall ({run['wall_s'] / 60:.1f} min), {run['jobs']} jobs; "
              f"the jobs' CPU {run['job_cpu_s']} s = {run['cpu_floor_s']} s on {args.cores} cores; "
              f"load average before {run['load_average_before']}")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
