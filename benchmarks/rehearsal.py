"""Per-rule peak memory of the rehearsal (`make rehearse`, docs/rehearsal.md): reads the cost records its model
jobs wrote (those of configs/rehearsal.yaml's datasets), prints each rule family's jobs, summed wall time and largest peak RSS beside the
memory ask the rules derive from it (datadream_core/memory.py), and adds the run to the JSON, which keeps every
rule's largest peak over the runs it holds (what REHEARSAL_PEAK_MB copies).

    .venv/bin/python benchmarks/rehearsal.py --out benchmarks/results-rehearsal.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datadream_core.layout import BENCHMARKS_DIR  # noqa: E402
from datadream_core.memory import HEADROOM, REHEARSAL_PEAK_MB, memory_ask_mb  # noqa: E402
from datadream_core.report.compute import job_costs  # noqa: E402


def rule_peaks(workdir: Path, datasets: set[str]) -> dict[str, dict]:
    """Rule family -> jobs, summed wall seconds and the largest peak RSS (MB, rounded up) of the jobs of
    `datasets`."""
    records = [path.relative_to(workdir) for path in sorted((workdir / BENCHMARKS_DIR).glob("*/*/**/*.json"))
               if path.relative_to(workdir / BENCHMARKS_DIR).parts[1] in datasets]
    by_rule = defaultdict(list)
    for cost in job_costs(records, workdir):
        by_rule[cost.rule].append(cost)
    return {rule: {"jobs": len(costs), "wall_s": round(sum(cost.wall_s for cost in costs), 1),
                   "max_rss_mb": int(-(-max(cost.max_rss_mb for cost in costs) // 1))}
            for rule, costs in sorted(by_rule.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=str(REPO), help="the folder the rehearsal ran in")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results-rehearsal.json"))
    args = parser.parse_args()
    datasets = set(yaml.safe_load((REPO / "configs/rehearsal.yaml").read_text(encoding="utf-8"))["datasets"])
    rules = rule_peaks(Path(args.workdir), datasets)
    missing = sorted(set(REHEARSAL_PEAK_MB) - set(rules))
    print(f"{'rule':<20} {'jobs':>5} {'wall s':>8} {'peak RSS MB':>12} {'mem_mb ask now':>15} "
          f"{f'{HEADROOM}x this run':>14}")
    for rule, row in rules.items():
        ask = memory_ask_mb(rule) if rule in REHEARSAL_PEAK_MB else None
        derived = -(-int(HEADROOM * row["max_rss_mb"]) // 1024) * 1024
        print(f"{rule:<20} {row['jobs']:>5} {row['wall_s']:>8} {row['max_rss_mb']:>12} {ask or '':>15} {derived:>14}")
    above = {rule: row["max_rss_mb"] for rule, row in rules.items() if row["max_rss_mb"] > REHEARSAL_PEAK_MB.get(rule, 0)}
    if above:
        print(f"this run's peaks are above datadream_core/memory.py REHEARSAL_PEAK_MB for {sorted(above)}: {above}")
    if missing:
        print(f"no cost record of {missing}: the rehearsal did not run them")
    # the peaks of one rule vary by a GB or more between runs: keep every run, and the largest peak of each rule
    out = Path(args.out)
    runs = json.loads(out.read_text(encoding="utf-8"))["runs"] if out.is_file() else []
    runs.append({"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "rules": rules})
    largest = {rule: max(run["rules"][rule]["max_rss_mb"] for run in runs if rule in run["rules"])
               for rule in sorted({rule for run in runs for rule in run["rules"]})}
    print(f"largest peak over {len(runs)} runs: {largest}")
    result = {"headroom": HEADROOM, "max_rss_mb": largest, "runs": runs}
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
