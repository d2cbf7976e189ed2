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


@pytest.fixture(scope="session")
def tiny_l14_checkpoint(tmp_path_factory):
    """A random fsad-tiny-l14 saved at its native 336 px, as a pretrained checkpoint file would be: its path and state."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model("fsad-tiny-l14", pretrained=None)
    path = tmp_path_factory.mktemp("weights") / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), path)
    return path, {name: value.clone() for name, value in model.state_dict().items()}
