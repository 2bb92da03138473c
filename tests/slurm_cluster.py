"""A real single-node SLURM cluster for tests: munge, slurmctld and slurmd with two fake GPUs.

Installs Debian's packages when they are missing, writes its config to /etc/slurm (the job step
drops SLURM_CONF, so the compiled-in default path is the only one nested `srun` finds), and stops
exactly the daemons it started, by PID. It refuses to touch a SLURM config it did not write.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
CONF_DIR = Path("/etc/slurm")
MARKER = "# written by the datadream test suite"


class ClusterUnavailable(Exception):
    """SLURM cannot be set up here; the message says why."""


def _run(command: list[str], timeout: int = 60, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=check)


def ensure_packages() -> None:
    if all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ClusterUnavailable("SLURM is not installed and apt-get as root is not available")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
        if result.returncode != 0:
            raise ClusterUnavailable(f"{' '.join(command)} failed: {result.stderr.strip()[-500:]}")


def _pid_from(path: Path, timeout: float = 30) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text().strip())
        time.sleep(0.2)
    raise ClusterUnavailable(f"daemon did not write its pid file {path}")


class SlurmCluster:
    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.host = socket.gethostname().split(".")[0]
        self.started: dict[str, int] = {}

    def _write_config(self) -> None:
        conf = CONF_DIR / "slurm.conf"
        if conf.exists() and MARKER not in conf.read_text():
            raise ClusterUnavailable(f"{conf} exists and was not written by this test suite; not touching it")
        if _run(["pgrep", "-x", "slurmctld"], check=False).returncode == 0:
            raise ClusterUnavailable("a slurmctld is already running; not starting another")
        for sub in ("spool/ctld", "spool/d", "run", "log"):
            (self.scratch / sub).mkdir(parents=True, exist_ok=True)
        for index in range(2):
            device = self.scratch / f"nvidia{index}"
            if not device.exists():
                os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))  # a character device, like /dev/null
        memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 - 1024
        d = self.scratch
        # at least 4 CPUs, even on a 2-core machine (config_overrides makes slurmd report the configured node):
        # four one-thread jobs run at a time, so a run of short jobs waits for fewer rounds of status polling
        CONF_DIR.mkdir(parents=True, exist_ok=True)
        conf.write_text(f"""{MARKER}
ClusterName=datadreamtest
SlurmctldHost={self.host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={d}/spool/ctld
SlurmdSpoolDir={d}/spool/d
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=7200
GresTypes=gpu
SlurmdParameters=config_overrides
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={max(4, os.cpu_count())} RealMemory={memory} Gres=gpu:fake:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        (CONF_DIR / "gres.conf").write_text(f"{MARKER}\nNodeName={self.host} Name=gpu Type=fake File={d}/nvidia[0-1]\n")

    def start(self) -> None:
        ensure_packages()
        self._write_config()
        if _run(["pgrep", "-x", "munged"], check=False).returncode != 0:
            for folder in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
                Path(folder).mkdir(parents=True, exist_ok=True)
                shutil.chown(folder, "munge", "munge")
            _run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"])
            self.started["munged"] = _pid_from(Path("/run/munge/munged.pid"))
        _run(["slurmctld"])
        self.started["slurmctld"] = _pid_from(self.scratch / "run/slurmctld.pid")
        _run(["slurmd"])
        self.started["slurmd"] = _pid_from(self.scratch / "run/slurmd.pid")
        deadline = time.time() + 60
        while time.time() < deadline:
            state = _run(["sinfo", "-h", "-N", "-o", "%T"], check=False).stdout.strip()
            if state.startswith("idle"):
                return
            if state.startswith(("drain", "inval", "down")):
                _run(["scontrol", "update", f"nodename={self.host}", "state=resume"], check=False)
            time.sleep(1)
        raise ClusterUnavailable(f"node never became idle (sinfo: {state!r})")

    def jobs(self) -> list[tuple[str, str, str]]:
        """(job id, name/comment, state) of every job the controller still remembers."""
        out = _run(["squeue", "-h", "-t", "all", "-o", "%i|%k|%T"], check=False).stdout
        return [tuple(line.split("|", 2)) for line in out.splitlines() if line.strip()]

    def stop(self) -> None:
        # only the cluster that ran parks the config: a start refused because another test session's controller
        # runs must leave that session's config alone
        ran_controller = "slurmctld" in self.started
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.started.pop(name, None)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.time() + 20
            while time.time() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            else:
                os.kill(pid, signal.SIGKILL)
        if ran_controller:
            self._park_config()

    def _park_config(self) -> None:
        """Leave a config whose clients fail at once: Snakemake's SLURM plugin runs `scontrol show config` every
        time Snakemake starts, which waits 9 s for a controller that is gone under the running config."""
        conf = CONF_DIR / "slurm.conf"
        if conf.exists() and MARKER in conf.read_text():
            conf.write_text(f"{MARKER}\n# parked: the test cluster is stopped\nClusterName=datadreamtest\n"
                            f"SlurmctldHost={self.host}\nMessageTimeout=1\n")
