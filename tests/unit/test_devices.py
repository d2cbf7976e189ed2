"""claim_device: CPU without GPUs, SLURM allocations as given, one lock per local GPU."""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import time

import pytest

from fsad.devices import claim_device, visible_devices

ALLOCATION_VARS = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ALLOCATION_VARS + ("FSAD_FAKE_GPUS",):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FSAD_GPU_LOCK_DIR", str(tmp_path / "locks"))


def _hold_device(name: str, claimed: multiprocessing.Queue, release: multiprocessing.Event) -> None:
    """Child process: claim a device, report (name, CUDA_VISIBLE_DEVICES, time), hold it until released."""
    with claim_device(poll_seconds=0.02):
        claimed.put((name, os.environ["CUDA_VISIBLE_DEVICES"], time.monotonic()))
        release.wait(30)


def test_no_gpu_gives_cpu_and_logs_it(monkeypatch, caplog):
    monkeypatch.setenv("FSAD_FAKE_GPUS", "0")
    with caplog.at_level(logging.INFO, logger="fsad.devices"), claim_device() as device:
        assert device == "cpu"
    assert "device: cpu" in caplog.text


def test_lock_sets_cuda_visible_devices_for_the_block_and_restores_it(monkeypatch, caplog):
    monkeypatch.setenv("FSAD_FAKE_GPUS", "2")
    with caplog.at_level(logging.INFO, logger="fsad.devices"), claim_device() as device:
        assert device == "cpu"  # fake GPUs compute on the CPU
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert "locked GPU 0 of 2 fake" in caplog.text


def test_lock_picks_among_the_devices_cuda_visible_devices_lists(monkeypatch):
    monkeypatch.setenv("FSAD_FAKE_GPUS", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    assert visible_devices(2) == ["5", "7"]
    with claim_device():
        assert os.environ["CUDA_VISIBLE_DEVICES"] in {"5", "7"}
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5,7"


def test_slurm_allocation_is_used_as_is_without_locking(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("FSAD_FAKE_GPUS", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with caplog.at_level(logging.INFO, logger="fsad.devices"), claim_device():
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert "SLURM allocation CUDA_VISIBLE_DEVICES=3" in caplog.text
    assert not (tmp_path / "locks").exists()


def test_an_empty_cuda_visible_devices_means_cpu(monkeypatch):
    monkeypatch.setenv("FSAD_FAKE_GPUS", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with claim_device() as device:
        assert device == "cpu"


def test_a_slurm_job_without_gpus_locks_like_a_local_run(monkeypatch, tmp_path):
    monkeypatch.setenv("FSAD_FAKE_GPUS", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    with claim_device():
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert (tmp_path / "locks" / "gpu-0.lock").exists()


def test_bad_fake_gpu_count_names_the_variable(monkeypatch):
    monkeypatch.setenv("FSAD_FAKE_GPUS", "two")
    with pytest.raises(ValueError, match="FSAD_FAKE_GPUS"):
        with claim_device():
            pass


def test_timeout_when_every_gpu_stays_locked_names_the_lock_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FSAD_FAKE_GPUS", "1")
    with claim_device():
        with pytest.raises(TimeoutError, match=str(tmp_path / "locks")):
            with claim_device(poll_seconds=0.01, timeout=0.05):
                pass


def test_concurrent_processes_get_distinct_devices_and_a_third_waits_for_one_to_free(monkeypatch):
    monkeypatch.setenv("FSAD_FAKE_GPUS", "2")
    ctx = multiprocessing.get_context("fork")
    claimed = ctx.Queue()
    releases = {name: ctx.Event() for name in "abc"}
    procs = {name: ctx.Process(target=_hold_device, args=(name, claimed, releases[name])) for name in "abc"}
    try:
        procs["a"].start()
        procs["b"].start()
        first = dict((name, (device, t)) for name, device, t in (claimed.get(timeout=20) for _ in range(2)))
        assert sorted(device for device, _ in first.values()) == ["0", "1"]

        procs["c"].start()
        with pytest.raises(queue.Empty):
            claimed.get(timeout=0.5)  # both GPUs are held: c must wait

        released_at = time.monotonic()
        releases["a"].set()
        name, device, t = claimed.get(timeout=20)
        assert name == "c"
        assert device == first["a"][0]
        assert t >= released_at
    finally:
        for event in releases.values():
            event.set()
        for proc in procs.values():
            if proc.pid is not None:
                proc.join(10)
    assert all(proc.exitcode == 0 for proc in procs.values())


# Claims a device, says so on stdout, then holds it until killed.
HOLD_UNTIL_KILLED = """
import sys, time
from fsad.devices import claim_device
with claim_device(lock_dir=sys.argv[1]) as device:
    print(device, flush=True)
    time.sleep(600)
"""


def start_holder(lock_dir) -> tuple[subprocess.Popen, str]:
    """A process holding a device lock in ``lock_dir`` (with this process's environment), and its device, once it holds it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_UNTIL_KILLED, str(lock_dir)], stdout=subprocess.PIPE, text=True)
    device = holder.stdout.readline().strip()
    assert device, "the holder exited before claiming a device"
    return holder, device


def test_a_gpu_lock_is_freed_when_its_holder_is_sigkilled(monkeypatch, tmp_path):
    monkeypatch.setenv("FSAD_FAKE_GPUS", "1")
    holder, _ = start_holder(tmp_path / "locks")
    try:
        with pytest.raises(TimeoutError):
            with claim_device(lock_dir=tmp_path / "locks", poll_seconds=0.01, timeout=0.2):
                pass
        os.kill(holder.pid, signal.SIGKILL)  # no finally, no atexit: only the kernel can release the lock
        holder.wait(10)
        with claim_device(lock_dir=tmp_path / "locks", poll_seconds=0.01, timeout=5):
            assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    finally:
        holder.kill()
        holder.wait()
    assert holder.returncode == -signal.SIGKILL
