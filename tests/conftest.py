"""Suite-wide rules: tests that need a setup skip without it, unless CI says the setup must be there.

``@pytest.mark.requires(reason, variable)``: ``reason`` is None when the setup (a SLURM cluster, Chromium, a
GPU) is available. Otherwise the test is skipped with ``reason``, or fails with it when ``$variable`` is ``1``:
``.ci/run`` sets those variables, so a CI machine that lost its setup fails instead of skipping silently.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n 2``), one torch thread per worker: two workers of two threads each on 2 cores wait on
    each other. Set before any test module imports torch."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")


def requirement_failure(reason: str | None, variable: str) -> str | None:
    """The failure message when a missing setup is required by ``$variable=1``; None when the test may run or skip."""
    if reason is None or os.environ.get(variable) != "1":
        return None
    return f"{reason} ({variable}=1: this run requires the setup, so the test fails instead of skipping)"


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("requires"):
        reason, variable = marker.args
        failure = requirement_failure(reason, variable)
        if failure is not None:
            pytest.fail(failure, pytrace=False)
        if reason is not None:
            pytest.skip(reason)
