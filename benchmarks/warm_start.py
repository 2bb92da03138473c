"""The warm start (datadream_core/warm_start.py) on a whole DAG: a config run cold (every model job imports the
model libraries itself) and warm (every model job forks from one server), in scratch folders, one after the
other; prints a table, writes JSON, and checks that both runs made the same adapters, images and accuracies.

    .venv/bin/python benchmarks/warm_start.py                      # configs/smoke.yaml on 2 cores
    .venv/bin/python benchmarks/warm_start.py --config config.yaml --cores 2 --out FILE
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datadream_core.warm_start import SOCKET_VARIABLE, start_server  # noqa: E402

COMPARED = ("*.safetensors", "*.png", "shard.csv", "metrics.json")


def run_workflow(work: Path, config: Path, cores: int, env: dict[str, str]) -> dict:
    """One Snakemake run of `config` in `work`: its wall time and how many jobs it ran."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
                           "--configfile", str(config), "--cores", str(cores), "--quiet", "rules"],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the run in {work} failed:\n{done.stderr[-4000:]}")
    steps = re.findall(r"(\d+) of \d+ steps \(100%\) done", done.stderr)
    return {"wall_s": round(wall, 1), "jobs": int(steps[-1]) if steps else None}


def differing_files(cold: Path, warm: Path) -> tuple[int, list[str]]:
    """How many result files both runs made, and which of them differ in bytes (metrics.json: in accuracy)."""
    compared, differing = 0, []
    for pattern in COMPARED:
        for path in sorted((cold / "results").rglob(pattern)):
            other = warm / path.relative_to(cold)
            compared += 1
            if pattern == "metrics.json":
                same = json.loads(path.read_text())["accuracy"] == json.loads(other.read_text())["accuracy"]
            else:
                same = other.is_file() and other.read_bytes() == path.read_bytes()
            if not same:
                differing.append(str(path.relative_to(cold)))
    return compared, differing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs/smoke.yaml"))
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results-warm-start.json"))
    args = parser.parse_args()
    # the server started below inherits this environment too (libraries read some of it when imported)
    os.environ.pop(SOCKET_VARIABLE, None)
    os.environ.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env = dict(os.environ)
    scratch = Path(tempfile.mkdtemp(prefix="warm_start_bench_"))
    try:
        runs = {}
        for kind in ("cold", "warm"):
            work = scratch / kind
            work.mkdir()
            config = shutil.copy(args.config, work / "config.yaml")
            if (REPO / "assets").is_dir():  # configs that name the shipped models relative to the run
                (work / "assets").symlink_to(REPO / "assets")
            if kind == "cold":
                runs[kind] = run_workflow(work, config, args.cores, env)
                continue
            started = time.perf_counter()
            socket_path = scratch / "server.sock"
            server = start_server(socket_path, scratch / "server.log")
            ready = time.perf_counter() - started
            try:
                runs[kind] = {**run_workflow(work, config, args.cores, {**env, SOCKET_VARIABLE: str(socket_path)}),
                              "server_start_s": round(ready, 1)}
            finally:
                server.terminate()
                server.wait()
        compared, differing = differing_files(scratch / "cold", scratch / "warm")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = {"config": os.path.relpath(args.config, REPO), "cores": args.cores, "machine": platform.processor()
              or platform.machine(), "cpu_count": os.cpu_count(), "runs": runs,
              "speedup": round(runs["cold"]["wall_s"] / (runs["warm"]["wall_s"] + runs["warm"]["server_start_s"]), 2),
              "files_compared": compared, "files_differing": differing}
    print(f"{'run':<6} {'jobs':>6} {'wall s':>8} {'server start s':>15}")
    for kind, run in runs.items():
        print(f"{kind:<6} {run['jobs']:>6} {run['wall_s']:>8} {run.get('server_start_s', ''):>15}")
    print(f"speedup (cold wall / warm wall with the server's start): {result['speedup']}x; "
          f"{compared} result files compared, {len(differing)} differ {differing[:5]}")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if differing:
        raise SystemExit("the warm run's results differ from the cold run's")


if __name__ == "__main__":
    main()
