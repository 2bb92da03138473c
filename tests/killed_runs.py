"""Kill a run the way a lost node or a closed terminal does: SIGKILL, once the run has written a given file.

The run is a script of its own process that starts with `run_in_warm_interpreter()`: under `make test` it forks from
the session's warm server (tests/conftest.py) instead of importing torch again; killing it kills that fork.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PROLOGUE = "from datadream_core.warm_start import run_in_warm_interpreter\n\nrun_in_warm_interpreter()\n\n"


def kill_once_written(code: str, args: list[str], written: Path, folder: Path, timeout: float = 180) -> str:
    """Run `code` (a script reading `args` from sys.argv[1:]) until `written` exists, kill it, and return its
    stderr; the run and everything it started are gone when this returns."""
    script = folder / "killed_run.py"
    script.write_text(PROLOGUE + code, encoding="utf-8")
    process = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + timeout
    while not written.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    # stderr ends only when every holder of the pipe ended: a warm run's fork too
    _, stderr = process.communicate()
    return stderr
