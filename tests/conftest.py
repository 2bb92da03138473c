import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # the workers share the cores: one torch thread each (the workflow jobs they start pin their own)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    from datadream_core.models.tiny import build_tiny_sd

    return str(build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny_sd", seed=0))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    from datadream_core.models.tiny import build_tiny_clip

    return str(build_tiny_clip(tmp_path_factory.mktemp("models") / "tiny_clip", seed=0))


# Under `make test` (pytest-xdist, --dist loadfile --no-loadscope-reorder) each test module runs on one worker, so
# that its module fixtures are made once, and the modules go to the workers in this order: the SLURM test first (it
# runs its DAG, then compares with the smoke run), test_cache second (it makes the smoke run meanwhile), then the
# modules that drive long DAGs, longest first; the other reader of the smoke run comes last, when it is made, and
# short modules fill the gaps in between.
FIRST_MODULES = ["test_slurm.py", "test_cache.py", "test_miniworld_effect.py", "test_cache_local_models.py",
                 "test_readme_commands.py", "test_classify.py", "test_paper_setting.py", "test_crash_resume.py",
                 "test_dream.py", "test_loft.py", "test_miniworld.py", "test_workflow_data.py"]
LAST_MODULES = ["test_workflow_smoke.py"]


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        module = item.nodeid.split("::")[0].rsplit("/", 1)[-1]
        if module in FIRST_MODULES:
            return FIRST_MODULES.index(module)
        return len(FIRST_MODULES) + 1 + LAST_MODULES.index(module) if module in LAST_MODULES else len(FIRST_MODULES)

    items.sort(key=rank)  # stable: the order within a module stays
    if "rehearsal" not in (config.getoption("markexpr") or ""):
        skip = pytest.mark.skip(reason="reads a finished `make rehearse` (which runs it with -m rehearsal)")
        for item in items:
            if item.get_closest_marker("rehearsal"):
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def warm_start(request, tmp_path_factory):
    """A warm server for the model jobs of every workflow run this worker starts (datadream_core/warm_start.py):
    each job forks from one process that imported torch and the model libraries once, instead of importing
    them for 4-7 s itself. The SLURM test runs its jobs cold and compares them with these."""
    from datadream_core.warm_start import SOCKET_VARIABLE, start_server

    if not any(item.get_closest_marker("e2e") for item in request.session.items):
        yield None
        return
    folder = tmp_path_factory.mktemp("warm_start")
    short = len(str(folder)) > 80  # a Unix socket's path holds at most 107 bytes
    if short:
        folder = Path(tempfile.mkdtemp(prefix="datadream-warm-", dir="/tmp"))
    socket_path = folder / "server.sock"
    server = start_server(socket_path, folder / "server.log")
    os.environ[SOCKET_VARIABLE] = str(socket_path)
    yield socket_path
    del os.environ[SOCKET_VARIABLE]
    server.terminate()
    server.wait(timeout=30)
    if short:
        shutil.rmtree(folder, ignore_errors=True)


def run_snakemake(workdir: Path, config: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Drive the real workflow through Snakemake's CLI in `workdir` with `config`."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "test_config.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(config_path), "--cores", "2", *args, "--quiet", "rules"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="session")
def smoke_local(tmp_path_factory):
    """configs/smoke.yaml run locally through the whole DAG, report included (shared by several tests).

    Made once per test session: under pytest-xdist the first worker that needs it makes it in the folder all
    workers share, while another that needs it waits on the lock; tests only read it or dry-run on it."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's folder above each worker's own
    work = shared / "smoke_local"
    config = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    with FileLock(str(shared / "smoke_local.lock")):
        finished = shared / "smoke_local.finished"
        if not finished.exists():
            shutil.rmtree(work, ignore_errors=True)
            run_snakemake(work, config)
            run_snakemake(work, config, "--report", "report.html")
            finished.touch()
    return work, config
