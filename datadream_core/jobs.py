"""What every workflow job does first: log to its log file and to stderr, pin CPU threads, stay offline."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

from datadream_core.models.hub import keep_offline

LOG = logging.getLogger("datadream")


def start_job(log_path: str | Path | None, threads: int = 1, offline: bool = True) -> logging.Logger:
    """Send log lines (and any uncaught traceback) to the job's log file as well as to stderr.

    `offline`: jobs never download models (a missing one fails in seconds, naming `snakemake models`) unless
    DATADREAM_JOBS_ONLINE=1; only the `models` rule, which fetches them, passes False.
    """
    if offline:
        keep_offline()
    import torch

    torch.set_num_threads(max(1, int(threads)))
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True)

    def log_uncaught(kind, value, tb):
        LOG.error("job failed: %s: %s\n%s", kind.__name__, value, "".join(traceback.format_tb(tb)))

    sys.excepthook = log_uncaught
    return LOG


def progress(total: int, desc: str, initial: int = 0, unit: str = "it"):
    """A tqdm bar that refreshes rarely when stderr is a log file rather than a terminal."""
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                mininterval=0.1 if interactive else 10.0)
