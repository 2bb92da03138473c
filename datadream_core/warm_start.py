"""A warm interpreter for model jobs: one server process imports torch, torchvision, open_clip, transformers,
diffusers and peft once, and each model job that Snakemake starts hands itself over to a fork of it.

A model job spends 4-7 s importing those libraries, often more than its work on small data. With
DATADREAM_WARM_START set to the socket of a server (`python -m datadream_core.warm_start SOCKET`), a model
job's script calls `run_in_warm_interpreter()` first. That sends its command line, working folder,
environment, import path and standard streams to the server and waits. The server forks a supervisor,
which forks the job: it runs the same script file (Snakemake's copy with its preamble) from the start, and
`run_in_warm_interpreter()` returns there at once. The supervisor reports the job's exit status, which the
waiting process takes as its own; if the waiting process dies (Snakemake killed it, or its head died), the
supervisor kills the job.

Without the variable, or with no server listening, the job runs in its own process as always. The server
refuses jobs of another checkout (its datadream_core is the one it imported), which then run cold.
Snakemake's `benchmark:` files measure the waiting process, so under a warm start their memory and CPU
columns are not the job's: benchmark real runs without it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import runpy
import select
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


def run_in_warm_interpreter() -> None:
    """Hand this job's script over to the warm server and exit with the status of its run there; return at
    once where there is no server (or it refuses), and in the forked job itself."""
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
                          "package": PACKAGE_DIR}).encode()
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
        job = os.fork()
        if job == 0:
            connection.close()
            _run_job(request)  # never returns
        status = _wait_for(job, connection)
        connection.sendall(_STATUS.pack(status))
    except BaseException as error:  # noqa: BLE001 -- a supervisor must end with a status, whatever failed
        print(f"warm start: supervisor failed: {error!r}", file=sys.stderr)
    finally:
        os._exit(0 if status == 0 else 1)


def _wait_for(job: int, connection: socket.socket) -> int:
    """The job's exit code (negative: the signal that ended it); kill it if the waiting process goes away."""
    while True:
        pid, wait_status = os.waitpid(job, os.WNOHANG)
        if pid == job:
            return os.waitstatus_to_exitcode(wait_status)
        if select.select([connection], [], [], 0.05)[0] and not connection.recv(1):
            os.kill(job, signal.SIGKILL)
            os.waitpid(job, 0)
            return -signal.SIGKILL


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve warm starts of model jobs on a Unix socket until the "
                                                 "process that started this one exits.")
    parser.add_argument("socket", help="the socket's path; set DATADREAM_WARM_START to it for Snakemake")
    parser.add_argument("--no-preload", action="store_true", help="import no model library (jobs that use none)")
    args = parser.parse_args(argv)
    serve(args.socket, preload=() if args.no_preload else PRELOADED_MODULES)


if __name__ == "__main__":
    # run the module's own copy, not this __main__ one, so that the forked jobs see `_in_warm_job` where their
    # scripts import it from
    from datadream_core.warm_start import main as serve_main

    serve_main()
