"""What every workflow job does first: log to its log file and to stderr, pin CPU threads, stay offline,
clean up after a killed predecessor, and exit with a code of its own on errors that no retry can fix."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Iterable

from datadream_core.io import LOG
from datadream_core.models.hub import keep_offline


# A job that fails on its input (bad data, a missing model, a bad config) exits with this code
# (sysexits' EX_DATAERR) instead of Python's 1; any other failure may be transient.
NON_RETRYABLE_EXIT_CODE = 65
NON_RETRYABLE_MARKER_SUFFIX = ".nonretryable"


def non_retryable_errors() -> tuple[type[BaseException], ...]:
    """The errors that fail the same way on every attempt: more memory or time cannot help them."""
    from datadream_core.config import ConfigError
    from datadream_core.data.sources import DatasetError
    from datadream_core.models import ModelNotAvailable

    return DatasetError, ModelNotAvailable, ConfigError


def non_retryable_marker(log_path: str | Path) -> Path:
    """The file beside a job's log that tells the job's next attempt its predecessor failed for good."""
    return Path(f"{log_path}{NON_RETRYABLE_MARKER_SUFFIX}")


def start_job(log_path: str | Path | None, threads: int = 1, outputs: Iterable[str | Path] | None = None,
              attempt: int = 1, offline: bool = True) -> logging.Logger:
    """Send log lines (and any uncaught traceback) to the job's log file as well as to stderr.

    `offline`: jobs never download models (a missing one fails in seconds, naming `snakemake models`) unless
    DATADREAM_JOBS_ONLINE=1; only the `models` rule, which fetches them, passes False.
    `outputs`: the files and folders this job writes (a folder is the job's own, whole); temporaries
    that a killed earlier run left for them are removed before the job starts.
    `attempt`: Snakemake's attempt number. Snakemake retries every failed job alike (9.x has no retry
    rule by exit code), so once an attempt failed with a non-retryable error (DatasetError,
    ModelNotAvailable, ConfigError), later attempts repeat its message and exit at once with
    NON_RETRYABLE_EXIT_CODE, before loading anything.
    """
    if offline:
        keep_offline()
    pin_threads(threads)
    marker = non_retryable_marker(log_path) if log_path else None
    previous_failure = _previous_failure(marker, attempt)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True)
    if previous_failure is not None:
        LOG.error("attempt %d not run: an earlier attempt failed with an error that no retry can fix: %s", attempt,
                  previous_failure)
        _exit_non_retryable()

    def log_uncaught(kind, value, tb):
        LOG.error("job failed: %s: %s\n%s", kind.__name__, value, "".join(traceback.format_tb(tb)))
        if isinstance(value, non_retryable_errors()):
            if marker is not None:
                from datadream_core.io import write_text

                write_text(marker, f"{kind.__name__}: {value}\n")
            _exit_non_retryable()

    sys.excepthook = log_uncaught
    if outputs is not None:
        from datadream_core.io import clean_stale_temporaries

        for path in clean_stale_temporaries(outputs):
            LOG.info("removed %s, left behind by a killed earlier run", path)
    return LOG


def pin_threads(threads: int) -> None:
    """Use `threads` CPU threads: torch's pool if a heavy job imported torch already, else the variables that
    torch and numpy's BLAS read when a later import starts them (light jobs never import torch)."""
    threads = str(max(1, int(threads)))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = threads
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))


def start_snakemake_job(snakemake, owned: Iterable[str | Path] = ()) -> logging.Logger:
    """`start_job` for a Snakemake script: its log, threads and attempt; its outputs and the folders in
    `owned` (which it writes whole) are cleaned of what a killed predecessor left."""
    return start_job(snakemake.log[0], snakemake.threads, outputs=[*snakemake.output, *owned],
                     attempt=snakemake.resources.get("attempt", 1))


def _previous_failure(marker: Path | None, attempt: int) -> str | None:
    """The message of an earlier attempt's non-retryable failure; attempt 1 (a new run) starts afresh."""
    if marker is None or not marker.is_file():
        return None
    if attempt <= 1:
        marker.unlink()
        return None
    return marker.read_text(encoding="utf-8").strip()


def _exit_non_retryable() -> None:
    logging.shutdown()
    sys.stderr.flush()
    os._exit(NON_RETRYABLE_EXIT_CODE)


def progress(total: int, desc: str, initial: int = 0, unit: str = "it"):
    """A tqdm bar that refreshes rarely when stderr is a log file rather than a terminal."""
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                mininterval=0.1 if interactive else 10.0)
