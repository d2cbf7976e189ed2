"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from tests.unit.range_server import RangeServer, serve_directory


@pytest.fixture
def server(tmp_path) -> RangeServer:
    """A local HTTP server (Range requests, request log) serving ``tmp_path/served``, for download tests."""
    served = tmp_path / "served"
    served.mkdir()
    with serve_directory(served) as running:
        yield running
