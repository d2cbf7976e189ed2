"""Pick the compute device of a GPU job: the SLURM allocation, a locked local GPU, or the CPU.

Snakemake's ``--resources gpu=G`` only caps how many ``gpu=1`` jobs run at once; it does not say
which GPU a job should use (snakemake/snakemake#281). :func:`claim_device` hands out the local
GPUs with one exclusive ``fcntl`` lock per device, so concurrent jobs get distinct devices, and a
job that finds every device taken waits for one to free. Under SLURM the scheduler has already
picked the GPUs and set ``CUDA_VISIBLE_DEVICES``; that choice is used as it is.

Environment:
    FSAD_GPU_LOCK_DIR  directory of the lock files (default ``<tempdir>/fsad-gpu-locks-<uid>``);
                       every job on a machine must use the same one.
    FSAD_FAKE_GPUS     for tests only: pretend this many GPUs exist. The locking and
                       ``CUDA_VISIBLE_DEVICES`` work as with real GPUs, but the job computes on the CPU.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator

LOCK_DIR_ENV = "FSAD_GPU_LOCK_DIR"
FAKE_GPUS_ENV = "FSAD_FAKE_GPUS"
# What a job log records of its environment, so that a run shows which GPU each job received.
ALLOCATION_ENV = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE")

log = logging.getLogger(__name__)


def default_lock_dir() -> Path:
    """``$FSAD_GPU_LOCK_DIR``, else ``<tempdir>/fsad-gpu-locks-<uid>`` (per user, shared by all their jobs)."""
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / f"fsad-gpu-locks-{os.getuid()}")


def gpu_count() -> int:
    """Number of GPUs this process can see: ``$FSAD_FAKE_GPUS`` if set, else ``torch.cuda.device_count()``.

    ``device_count`` asks NVML and so leaves CUDA uninitialised: ``CUDA_VISIBLE_DEVICES`` can still change after it.
    """
    fake = os.environ.get(FAKE_GPUS_ENV)
    if fake is not None:
        try:
            count = int(fake)
        except ValueError:
            raise ValueError(f"{FAKE_GPUS_ENV}={fake!r} is not a whole number; set it to the number of GPUs to pretend, or unset it") from None
        if count < 0:
            raise ValueError(f"{FAKE_GPUS_ENV}={fake!r} is negative; set it to 0 or more, or unset it")
        return count
    import torch

    return torch.cuda.device_count()


def visible_devices(count: int) -> list[str]:
    """The ids of the ``count`` visible GPUs, as ``CUDA_VISIBLE_DEVICES`` names them (indices or UUIDs)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    return [d.strip() for d in listed.split(",") if d.strip()][:count]


def allocation_summary() -> str:
    """``NAME=value`` of each GPU allocation variable that is set, for the job log."""
    shown = [f"{name}={os.environ[name]}" for name in ALLOCATION_ENV if name in os.environ]
    return ", ".join(shown) or "no GPU allocation variables set"


def slurm_gpu_allocation() -> str | None:
    """``CUDA_VISIBLE_DEVICES`` when this process runs in a SLURM job that was given GPUs, else None."""
    if "SLURM_JOB_ID" not in os.environ:
        return None
    return os.environ.get("CUDA_VISIBLE_DEVICES") or None


def _try_lock(path: Path) -> IO[bytes] | None:
    handle = open(path, "a+b")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _lock_one(devices: list[str], lock_dir: Path, poll_seconds: float, timeout: float | None) -> tuple[str, IO[bytes]]:
    """Exclusive lock on the first free device; waits while all are taken. The lock dies with the process."""
    lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    start = time.monotonic()
    waiting_logged = False
    while True:
        for device in devices:
            handle = _try_lock(lock_dir / f"gpu-{device.replace('/', '_')}.lock")
            if handle is not None:
                return device, handle
        waited = time.monotonic() - start
        if timeout is not None and waited >= timeout:
            raise TimeoutError(
                f"all {len(devices)} GPUs {devices} stayed locked for {waited:.0f} s (lock files in {lock_dir}); "
                f"run fewer GPU jobs at once (--resources gpu=N with N <= {len(devices)}) or end the jobs holding them"
            )
        if not waiting_logged:
            log.info("all %d GPUs %s are in use (locks in %s); waiting for one to free", len(devices), devices, lock_dir)
            waiting_logged = True
        time.sleep(poll_seconds)


@contextlib.contextmanager
def claim_device(
    lock_dir: str | Path | None = None, poll_seconds: float = 0.2, timeout: float | None = None
) -> Iterator[str]:
    """Claim a device for the block and yield its torch name (``'cuda:0'`` or ``'cpu'``).

    Enter this before anything initialises CUDA. In order:
    - no GPU visible -> ``'cpu'``;
    - a SLURM job with a GPU allocation -> the allocation as it is, ``'cuda:0'``;
    - otherwise an exclusive lock on one visible GPU (waiting while all are locked, up to ``timeout``
      seconds if given); ``CUDA_VISIBLE_DEVICES`` is set to that GPU for the block and restored after.
    With ``$FSAD_FAKE_GPUS`` the lock and ``CUDA_VISIBLE_DEVICES`` are real but the device is ``'cpu'``.
    The choice and the allocation variables are logged (``fsad.devices``) into the job log.
    """
    fake = FAKE_GPUS_ENV in os.environ
    count = gpu_count()
    devices = visible_devices(count)
    torch_device = "cpu" if fake else "cuda:0"
    if not devices:
        log.info("device: cpu (no GPU visible; %s)", allocation_summary())
        yield "cpu"
        return
    allocated = slurm_gpu_allocation()
    if allocated is not None:
        log.info("device: %s, SLURM allocation CUDA_VISIBLE_DEVICES=%s (%s)", torch_device, allocated, allocation_summary())
        yield torch_device
        return
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    device, handle = _lock_one(devices, lock_dir, poll_seconds, timeout)
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    try:
        log.info(
            "device: %s, locked GPU %s of %d%s (lock in %s; %s)",
            torch_device, device, count, " fake" if fake else "", lock_dir, allocation_summary(),
        )
        yield torch_device
    finally:
        if previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous
        handle.close()
        log.info("released GPU %s", device)
