"""What every workflow job does first: log to its log file and to stderr, pin CPU threads, stay offline,
clean up after a killed predecessor, and exit with a code of its own on errors that no retry can fix."""

from __future__ import annotations

import importlib
import inspect
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


def start_snakemake_job(snakemake, owned: Iterable[str | Path] = (), offline: bool = True) -> logging.Logger:
    """`start_job` for a Snakemake script: its log, threads and attempt; its outputs and the folders in
    `owned` (which it writes whole) are cleaned of what a killed predecessor left."""
    return start_job(snakemake.log[0], snakemake.threads, outputs=[*snakemake.output, *owned],
                     attempt=snakemake.resources.get("attempt", 1), offline=offline)


# Params that tell the job how to run rather than what to compute: the job function never sees them.
JOB_PARAMS = ("job", "owned", "online")


def run_snakemake_job(snakemake) -> None:
    """Run the rule's job function, `params.job` ("module:function"), as this job, once its log is started.

    Its keyword arguments: the rule's named inputs, named outputs and params (less JOB_PARAMS and the `cost`
    output, which the model job launcher writes), an OutputNeutral param as its values, JobSettings as a
    plain dict, and the job's `threads` where the function takes them (how fast, never what: not a param).
    Params `owned` (folders the job writes whole) are cleaned with the outputs; `online: True` lets the job
    download. A rule with params `provenance` and input `identity` gives the function the provenance with the
    data identity (`provenance`), not the identity file."""
    params = dict(snakemake.params.items())
    start_snakemake_job(snakemake, owned=params.get("owned", ()), offline=not params.get("online", False))
    function = job_function(params["job"])
    arguments = job_arguments(snakemake, params, function)
    check_job_arguments(function, arguments, f"rule {snakemake.rule} (job {params['job']})")
    function(**arguments)


def job_function(name: str):
    """The function that `name` ("package.module:function") names."""
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def job_arguments(snakemake, params: dict, function) -> dict:
    """The keyword arguments of the rule's job function (see `run_snakemake_job`)."""
    from datadream_core.config import JobSettings, OutputNeutral
    from datadream_core.identity import with_data_identity

    named = {**dict(snakemake.input.items()), **dict(snakemake.output.items()), **params}
    arguments = {name: value for name, value in named.items() if name not in (*JOB_PARAMS, "cost")}
    for name, value in arguments.items():
        if isinstance(value, OutputNeutral):
            arguments[name] = value.values
        elif isinstance(value, JobSettings):
            arguments[name] = dict(value)
    if "provenance" in arguments and "identity" in arguments:
        arguments["provenance"] = with_data_identity(arguments["provenance"], arguments.pop("identity"))
    if "threads" in inspect.signature(function).parameters:
        arguments["threads"] = snakemake.threads
    return arguments


def check_job_arguments(function, arguments: dict, job: str) -> None:
    """Fail with one message naming every argument that `function` needs and `job` does not give, and every
    one it gives that `function` does not take."""
    signature = inspect.signature(function).parameters.values()
    names = {parameter.name for parameter in signature}
    missing = [parameter.name for parameter in signature if parameter.name not in arguments
               and parameter.default is inspect.Parameter.empty]
    unexpected = sorted(set(arguments) - names)
    if missing or unexpected:
        raise TypeError(f"{job} does not fit {function.__module__}.{function.__name__}: missing arguments"
                        f" {missing or 'none'}; arguments it does not take {unexpected or 'none'}")


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
