"""Model jobs: one launcher runs every model rule's script, in a warm interpreter where there is one, and records
the job's own cost (wall time, CPU time, peak memory) in its `cost` output, which the compute table reads.

A model job spends 4-7 s importing torch, torchvision, open_clip, transformers, diffusers and peft, often more than
its work on small data. Every model rule runs workflow_scripts/model_job.py, which calls `run_model_job`. With
DATADREAM_WARM_START set to the socket of a server (`python -m datadream_core.warm_start SOCKET`, or `with_server`
around a command, as `make run` does), the job sends its command line, working folder, environment, import path
and standard streams to the server and waits. The server, which imported those libraries once, forks a
supervisor, which forks the job: it runs the same script file (Snakemake's copy with its preamble) from the start
and then the rule's job function (params.job, datadream_core/jobs.py). The supervisor takes the job's resource
usage from `os.wait4` and writes the cost record; it reports the job's exit status, which the waiting process takes
as its own; if the waiting process dies (Snakemake killed it, or its head died), the supervisor kills the job.

Without the variable (a cluster run), or with no server listening, the job runs in its own process as always and
records its own usage. The server refuses jobs of another checkout (its datadream_core is the one it imported),
which then run cold.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import resource
import runpy
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

SOCKET_VARIABLE = "DATADREAM_WARM_START"
# what model jobs import: the libraries whose import a warm start saves
PRELOADED_MODULES = (
    "torch", "torchvision", "open_clip", "safetensors.torch", "transformers.models.clip.modeling_clip",
    "peft", "diffusers.models.unets.unet_2d_condition", "diffusers.models.autoencoders.autoencoder_kl",
    "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion",
    "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img", "diffusers.schedulers",
    "pytorch_fid.inception", "scipy.linalg",
)
PACKAGE_DIR = str(Path(__file__).resolve().parent)
# the reply of a server that runs no job for this request: the job runs in its own process
RUN_COLD = -1000
_HEADER = struct.Struct("!I")
_STATUS = struct.Struct("!i")

_in_warm_job = False


def run_model_job(snakemake) -> None:
    """Run this model job's job function (`params.job`, `jobs.run_snakemake_job`) and record its cost in
    `output.cost` where the rule has one: handed to the warm server where there is one (its supervisor records),
    else in this process."""
    from datadream_core.jobs import run_snakemake_job

    cost_record = snakemake.output.get("cost")
    if not _in_warm_job:
        run_in_warm_interpreter(cost_record)  # returns only where the job runs here
    run_snakemake_job(snakemake)
    if cost_record and not _in_warm_job:
        _write_cost(cost_record, _own_cost())


def _own_cost() -> dict:
    """This process's (and its children's) cost since it started."""
    import psutil

    usages = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return {"wall_s": time.time() - psutil.Process().create_time(),
            "cpu_s": sum(usage.ru_utime + usage.ru_stime for usage in usages),
            "max_rss_mb": max(usage.ru_maxrss for usage in usages) / 1024, "warm": False}


def _write_cost(path: str, cost: dict) -> None:
    from datadream_core.io import write_json

    write_json(path, cost)


def run_in_warm_interpreter(cost_record: str | None = None) -> None:
    """Hand this job's script over to the warm server and exit with the status of its run there; return at
    once where there is no server (or it refuses), and in the forked job itself. The supervisor writes the
    job's cost to `cost_record`, where given, once it succeeded."""
    socket_path = os.environ.get(SOCKET_VARIABLE)
    if _in_warm_job or not socket_path:
        return
    main = sys.modules["__main__"]
    script = getattr(main, "__real_file__", None) or getattr(main, "__file__", None)
    if script is None:
        return
    try:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(socket_path)
    except OSError as error:
        print(f"warm start: no server at {socket_path} ({error}); running in this process", file=sys.stderr)
        return
    umask = os.umask(0)
    os.umask(umask)
    request = json.dumps({"script": str(Path(script).resolve()), "argv": sys.argv, "cwd": os.getcwd(),
                          "environ": dict(os.environ), "path": sys.path, "umask": umask,
                          "package": PACKAGE_DIR,
                          "cost_record": cost_record and os.path.abspath(cost_record)}).encode()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        socket.send_fds(connection, [_HEADER.pack(len(request))], [0, 1, 2])
        connection.sendall(request)
    except OSError as error:  # nothing ran yet: the job can still run here
        print(f"warm start: could not hand the job to {socket_path} ({error}); running in this process",
              file=sys.stderr)
        return
    reply = _receive_exactly(connection, _STATUS.size)
    if reply is None:
        sys.exit("warm start: the server ended this job without an exit status")
    (status,) = _STATUS.unpack(reply)
    if status == RUN_COLD:
        return
    if status < 0:  # the job died of a signal: die of it too, so that Snakemake sees the same
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    os._exit(status)


def _receive_exactly(connection: socket.socket, size: int) -> bytes | None:
    """`size` bytes from `connection`, or None where it closed before."""
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def serve(socket_path: str | Path, preload: tuple[str, ...] = PRELOADED_MODULES) -> None:
    """Import `preload`, then fork a supervised job for every connection until the parent process exits."""
    for name in preload:
        importlib.import_module(name)
    parent = os.getppid()
    socket_path = Path(socket_path)
    staging = socket_path.with_name(f".{socket_path.name}.{os.getpid()}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(staging))
    listener.listen(64)
    os.replace(staging, socket_path)  # the socket appears only once the server accepts
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped as they end
    try:
        while os.getppid() == parent:
            if not select.select([listener], [], [], 1.0)[0]:
                continue
            connection, _ = listener.accept()
            if os.fork() == 0:
                listener.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _supervise(connection)  # never returns
            connection.close()
    finally:
        socket_path.unlink(missing_ok=True)


def _supervise(connection: socket.socket) -> None:
    """In a fork of the server: take the request, fork the job, and report how it ended."""
    status = 1
    try:
        header, fds, _, _ = socket.recv_fds(connection, _HEADER.size, 3)
        (length,) = _HEADER.unpack(header)
        payload = _receive_exactly(connection, length)
        if payload is None:
            raise ConnectionError("the job's process closed its connection")
        request = json.loads(payload)
        if request["package"] != PACKAGE_DIR:
            connection.sendall(_STATUS.pack(RUN_COLD))
            os._exit(0)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        started = time.monotonic()
        job = os.fork()
        if job == 0:
            connection.close()
            _run_job(request)  # never returns
        status, usage = _wait_for(job, connection)
        if status == 0 and request["cost_record"]:
            _write_cost(request["cost_record"], {"wall_s": time.monotonic() - started,
                                                 "cpu_s": usage.ru_utime + usage.ru_stime,
                                                 "max_rss_mb": usage.ru_maxrss / 1024, "warm": True})
        connection.sendall(_STATUS.pack(status))
    except BaseException as error:  # noqa: BLE001 -- a supervisor must end with a status, whatever failed
        print(f"warm start: supervisor failed: {error!r}", file=sys.stderr)
    finally:
        os._exit(0 if status == 0 else 1)


def _wait_for(job: int, connection: socket.socket) -> tuple[int, resource.struct_rusage | None]:
    """The job's exit code (negative: the signal that ended it) and resource usage; kill it if the waiting
    process goes away."""
    while True:
        pid, wait_status, usage = os.wait4(job, os.WNOHANG)
        if pid == job:
            return os.waitstatus_to_exitcode(wait_status), usage
        if select.select([connection], [], [], 0.05)[0] and not connection.recv(1):
            os.kill(job, signal.SIGKILL)
            os.waitpid(job, 0)
            return -signal.SIGKILL, None


def _run_job(request: dict) -> None:
    """In the forked job: become the waiting process (folder, environment, path, arguments) and run its
    script as __main__."""
    global _in_warm_job
    _in_warm_job = True
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["environ"])
    sys.path[:] = request["path"]
    sys.argv[:] = request["argv"]
    code = 0
    try:
        runpy.run_path(request["script"], run_name="__main__")
    except SystemExit as exit_:
        code = _exit_code(exit_)
    except BaseException:  # noqa: BLE001 -- report it as the interpreter would, through the job's excepthook
        try:
            sys.excepthook(*sys.exc_info())
            code = 1
        except SystemExit as exit_:
            code = _exit_code(exit_)
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _exit_code(exit_: SystemExit) -> int:
    if exit_.code is None:
        return 0
    if isinstance(exit_.code, int):
        return exit_.code
    print(exit_.code, file=sys.stderr)
    return 1


def start_server(socket_path: str | Path, log_path: str | Path, preload: bool = True,
                 timeout: float = 300) -> subprocess.Popen:
    """Start a server on `socket_path` (its output to `log_path`), child of this process; return once it
    accepts jobs. `preload=False` imports no model library (for jobs that use none)."""
    socket_path = Path(socket_path)
    command = [sys.executable, "-m", "datadream_core.warm_start", str(socket_path), *([] if preload else ["--no-preload"])]
    with open(log_path, "w", encoding="utf-8") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while not socket_path.exists():
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            tail = Path(log_path).read_text(encoding="utf-8")[-3000:]
            raise RuntimeError(f"the warm server on {socket_path} did not start:\n{tail}")
        time.sleep(0.05)
    return server


def with_server(command: list[str]) -> int:
    """Run `command` with DATADREAM_WARM_START set to a server of this process (started first, gone after);
    return its exit status."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="datadream-warm-"))  # a short path: socket paths have a length limit
    server = start_server(folder / "socket", folder / "server.log")
    try:
        return subprocess.call(command, env={**os.environ, SOCKET_VARIABLE: str(folder / "socket")})
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve warm starts of model jobs on a Unix socket until the "
                                                 "process that started this one exits, or run a command with one.")
    parser.add_argument("socket", nargs="?", help="the socket's path; set DATADREAM_WARM_START to it for Snakemake")
    parser.add_argument("--no-preload", action="store_true", help="import no model library (jobs that use none)")
    parser.add_argument("--run", nargs=argparse.REMAINDER, metavar="COMMAND",
                        help="start a server, run COMMAND (e.g. snakemake ...) with its jobs warm, stop the server")
    args = parser.parse_args(argv)
    if args.run:
        sys.exit(with_server(args.run))
    if args.socket is None:
        parser.error("give a socket path, or --run COMMAND")
    serve(args.socket, preload=() if args.no_preload else PRELOADED_MODULES)


if __name__ == "__main__":
    # run the module's own copy, not this __main__ one, so that the forked jobs see `_in_warm_job` where their
    # scripts import it from
    from datadream_core.warm_start import main as serve_main

    serve_main()
