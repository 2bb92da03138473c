"""The warm start (datadream_core/warm_start.py): a job handed to the server behaves as the process that Snakemake
started would: same folder, environment, arguments, streams and exit status, and it dies with that process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from datadream_core.warm_start import SOCKET_VARIABLE, start_server

REPO = Path(__file__).resolve().parents[1]

JOB = textwrap.dedent("""\
    import os, signal, sys, time
    from datadream_core.warm_start import run_in_warm_interpreter

    run_in_warm_interpreter()
    print("pid", os.getpid(), "cwd", os.getcwd(), "argv", sys.argv[1:], "colour", os.environ.get("COLOUR"))
    print("to stderr", file=sys.stderr)
    action = sys.argv[1]
    if action == "sleep":
        open("job.pid", "w").write(str(os.getpid()))
        time.sleep(60)
    if action == "raise":
        raise ValueError("a bad input")
    if action == "signal":
        os.kill(os.getpid(), signal.SIGTERM)
    sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
""")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server that preloads nothing (the jobs here import no model library)."""
    folder = tmp_path_factory.mktemp("warm")
    socket_path = folder / "server.sock"
    process = start_server(socket_path, folder / "server.log", preload=False)
    yield socket_path
    process.terminate()
    process.wait(timeout=10)


def run_job(tmp_path: Path, socket_path: Path | None, *args: str, pythonpath: Path = REPO, **popen) -> subprocess.Popen:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    env = {name: value for name, value in os.environ.items() if name != SOCKET_VARIABLE}
    env.update(COLOUR="teal", PYTHONPATH=str(pythonpath))
    if socket_path is not None:
        env[SOCKET_VARIABLE] = str(socket_path)
    return subprocess.Popen([sys.executable, str(script), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def finished(process: subprocess.Popen) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=60)
    return process.returncode, stdout, stderr


def test_a_warm_job_runs_in_a_fork_with_the_callers_folder_environment_arguments_and_streams(server, tmp_path):
    process = run_job(tmp_path, server, "exit", "3")
    code, stdout, stderr = finished(process)
    assert code == 3, stderr
    assert f"pid {process.pid} " not in stdout  # the script ran on in another process
    assert f"cwd {tmp_path} argv ['exit', '3'] colour teal" in stdout
    assert "to stderr" in stderr and "warm start" not in stderr


def test_without_a_server_the_job_runs_cold(tmp_path):
    process = run_job(tmp_path, tmp_path / "no_server.sock", "exit", "0")
    code, stdout, stderr = finished(process)
    assert code == 0 and f"pid {process.pid} " in stdout
    assert "warm start: no server at" in stderr and "no_server.sock" in stderr


def test_an_uncaught_error_fails_the_job_with_its_traceback(server, tmp_path):
    code, _, stderr = finished(run_job(tmp_path, server, "raise"))
    assert code == 1
    assert "ValueError: a bad input" in stderr and "Traceback" in stderr


def test_a_job_that_dies_of_a_signal_ends_its_caller_with_the_same_signal(server, tmp_path):
    code, _, _ = finished(run_job(tmp_path, server, "signal"))
    assert code == -signal.SIGTERM


def test_killing_the_caller_kills_the_warm_job(server, tmp_path):
    process = run_job(tmp_path, server, "sleep")
    deadline = time.monotonic() + 30
    while not (tmp_path / "job.pid").exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    job = int((tmp_path / "job.pid").read_text())
    assert job != process.pid
    process.kill()  # as Snakemake's head dying takes its job processes with it
    process.wait()  # not communicate(): the job holds the caller's pipes open until it ends
    deadline = time.monotonic() + 10
    while _alive(job) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(job)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_job_of_another_checkout_runs_cold(server, tmp_path):
    other = tmp_path / "other_checkout"
    (other / "datadream_core").mkdir(parents=True)
    for name in ("__init__.py", "warm_start.py"):
        shutil.copy(REPO / "datadream_core" / name, other / "datadream_core" / name)
    process = run_job(tmp_path, server, "exit", "0", pythonpath=other)
    code, stdout, stderr = finished(process)
    assert code == 0, stderr
    assert f"pid {process.pid} " in stdout  # ran in its own process, with its own code


COSTLY_JOB = textwrap.dedent("""\
    import time


    def costly(result):
        block = bytearray(300 * 2**20)  # touched below, so resident
        for page in range(0, len(block), 4096):
            block[page] = 1
        deadline = time.process_time() + 1.0
        while time.process_time() < deadline:
            pass
        open(result, "w").write("done")
""")
COST_SNAKEFILE = textwrap.dedent("""\
    rule costly:
        output:
            result="result.txt",
            cost="cost.json",
        log:
            "costly.log",
        params:
            job="costly_job:costly",
        script:
            "{launcher}"
""")


def test_a_warm_jobs_cost_record_is_its_own_as_a_cold_run_of_the_same_job_records_it(server, tmp_path):
    """The supervisor records the forked job's usage (os.wait4), not the waiting process's: the job's 300 MB and
    its second of CPU show in both the warm and the cold record. (The waiting process holds well under 300 MB and
    spends well under a second; CPU times are not compared further, as parallel tests make them vary.)"""
    (tmp_path / "costly_job.py").write_text(COSTLY_JOB)
    records = {}
    for kind in ("warm", "cold"):
        folder = tmp_path / kind
        folder.mkdir()
        (folder / "Snakefile").write_text(COST_SNAKEFILE.format(launcher=REPO / "workflow_scripts/model_job.py"))
        env = {name: value for name, value in os.environ.items() if name != SOCKET_VARIABLE}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(tmp_path)])
        if kind == "warm":
            env[SOCKET_VARIABLE] = str(server)
        run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--quiet"], cwd=folder, env=env,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-3000:]
        assert (folder / "result.txt").read_text() == "done"
        records[kind] = json.loads((folder / "cost.json").read_text())
    warm, cold = records["warm"], records["cold"]
    assert (warm["warm"], cold["warm"]) == (True, False)
    for record in (warm, cold):
        assert record["max_rss_mb"] >= 300 and 1.0 <= record["cpu_s"] <= record["wall_s"] + 0.5, record
