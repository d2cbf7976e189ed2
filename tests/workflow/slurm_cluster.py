"""A throw-away single-node SLURM cluster (munged, slurmctld, slurmd) for the SLURM workflow tests.

Needs Debian's slurm-wlm and munge (``.ci/slurm-setup.sh`` installs them) and root: slurmd runs jobs
as their user, and the config must sit at the compiled-in path ``/etc/slurm/slurm.conf`` because the
jobstep executor strips ``SLURM_CONF`` before its ``srun`` (see docs/slurm.md). Every daemon runs in
the foreground as a child of this process, so :meth:`SlurmCluster.stop` ends exactly the processes
started here, by PID. Fake GPUs are gres entries backed by plain files, which is all SLURM needs to
allocate them and set ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SLURM_CONF = Path("/etc/slurm/slurm.conf")
GRES_CONF = Path("/etc/slurm/gres.conf")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scancel")
SLURMCTLD_PORT = 6817


def unavailable_reason() -> str | None:
    """Why a local cluster cannot be started here, or None when it can."""
    missing = [name for name in BINARIES if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]
    if missing:
        return f"SLURM binaries {missing} not installed; run .ci/slurm-setup.sh (as root) to install slurm-wlm and munge"
    if os.geteuid() != 0:
        return "a local SLURM cluster needs root (slurmd and /etc/slurm/slurm.conf); run the slurm tests as root, as CI does"
    for conf in (SLURM_CONF, GRES_CONF):
        if conf.exists() and not conf.is_symlink():
            return f"{conf} exists and is not a test cluster's; not touching a real SLURM setup"
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", SLURMCTLD_PORT)) == 0:
            return f"port {SLURMCTLD_PORT} is in use: another slurmctld runs here; stop it to run the slurm tests"
    return None


def _sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class SlurmCluster:
    """A running cluster: one node ``localhost`` in every partition named, ``gpus`` fake GPUs of type ``fake``."""

    root: Path
    partitions: tuple[str, ...]
    cpus: int
    memory_mb: int
    gpus: int
    daemons: dict[str, subprocess.Popen] = field(default_factory=dict)

    def write_config(self) -> None:
        munge = self.root / "munge"
        gpu_files = [self.root / f"fake-gpu{i}" for i in range(self.gpus)]
        for path in gpu_files:
            # gres wants a character device; a link to /dev/null is one that every machine has.
            path.symlink_to("/dev/null")
        partitions = "\n".join(
            f"PartitionName={name} Nodes=localhost Default={'YES' if i == 0 else 'NO'} MaxTime=INFINITE State=UP"
            for i, name in enumerate(self.partitions)
        )
        (self.root / "slurm.conf").write_text(
            f"""ClusterName=fsadtest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge}/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# Use the CPUs/memory below instead of the detected hardware, so cluster-sized requests fit a CI machine.
SlurmdParameters=config_overrides
StateSaveLocation={self.root}/ctld
SlurmdSpoolDir={self.root}/slurmd
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd.pid
SlurmctldLogFile={self.root}/slurmctld.log
SlurmdLogFile={self.root}/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# No accounting database: finished jobs are known only to squeue, for MinJobAge seconds.
MinJobAge=600
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} Gres=gpu:fake:{self.gpus} State=UNKNOWN
{partitions}
"""
        )
        (self.root / "gres.conf").write_text(
            "".join(f"NodeName=localhost Name=gpu Type=fake File={path}\n" for path in gpu_files)
        )
        for conf in (SLURM_CONF, GRES_CONF):
            conf.parent.mkdir(parents=True, exist_ok=True)
            if conf.is_symlink():
                conf.unlink()
            conf.symlink_to(self.root / conf.name)

    def _spawn(self, name: str, cmd: list[str], user: str | None = None) -> None:
        log = open(self.root / f"{name}.out", "wb")
        self.daemons[name] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, user=user, group=user, extra_groups=[] if user else None
        )
        log.close()

    def _wait(self, what: str, check, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            for name, proc in self.daemons.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"local SLURM cluster: no {what} after {timeout} s:\n{self.logs()}")
            time.sleep(0.2)

    def logs(self) -> str:
        parts = []
        for path in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.out")) + sorted(self.root.glob("munge/*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def start(self) -> None:
        for sub in ("ctld", "slurmd"):
            (self.root / sub).mkdir()
        munge = self.root / "munge"
        munge.mkdir(mode=0o755)
        shutil.chown(munge, "munge", "munge")
        self.write_config()
        self._spawn("munged", [
            _sbin("munged"), "--foreground", f"--socket={munge}/munge.socket", f"--pid-file={munge}/munged.pid",
            f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed",
        ], user="munge")
        self._wait("munge socket", lambda: (munge / "munge.socket").exists())
        self._spawn("slurmctld", [_sbin("slurmctld"), "-D"])
        self._spawn("slurmd", [_sbin("slurmd"), "-D", "-N", "localhost"])
        self._wait("idle node", lambda: "idle" in self.run("sinfo", "-h", "-o", "%T", check=False).stdout)

    def submitted_job_ids(self) -> list[int]:
        """Ids of the batch jobs slurmctld accepted so far (from its own log: each sbatch call is one)."""
        text = (self.root / "slurmctld.log").read_text(errors="replace")
        return [int(m) for m in re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", text)]

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), capture_output=True, text=True, check=check, timeout=30)

    def stop(self) -> None:
        """Cancel every job of the cluster, end the daemons started here (by PID, slurmd first), remove its files."""
        if "slurmctld" in self.daemons and self.daemons["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--user", pwd.getpwuid(os.geteuid()).pw_name, check=False)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.daemons.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for conf in (SLURM_CONF, GRES_CONF):
            if conf.is_symlink() and Path(os.readlink(conf)).parent == self.root:
                conf.unlink()
        shutil.rmtree(self.root, ignore_errors=True)


def write_cluster_profile(directory: Path, profile: Path, grouped: bool = True) -> dict:
    """``profile`` (profiles/slurm) as it is, except for what this cluster lacks: an accounting DB (no account to
    validate, no sacct, so job status comes from squeue) and 40 s of patience before the first check; without
    ``grouped``, also without its groups. Written as ``directory/profile.yaml``; returns the profile."""
    settings = yaml.safe_load(profile.read_text())
    settings["default-resources"].pop("slurm_account", None)
    settings.update({"slurm-status-command": "squeue", "slurm-init-seconds-before-status-checks": 1, "latency-wait": 5})
    if not grouped:
        settings.pop("groups"), settings.pop("group-components")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "profile.yaml").write_text(yaml.safe_dump(settings))
    return settings


def start_cluster(partitions: tuple[str, ...], cpus: int = 16, memory_mb: int = 256_000, gpus: int = 2) -> SlurmCluster:
    """Start a cluster in a fresh directory under the temp dir; the caller must call ``stop()`` (also on failure)."""
    root = Path(tempfile.mkdtemp(prefix="fsad-slurm-"))
    root.chmod(0o755)
    cluster = SlurmCluster(root, partitions, cpus, memory_mb, gpus)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster
