"""Atomic writes leave results with an ordinary file's or directory's permissions under the process umask."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from fsad.io import atomic_directory, atomic_path, remove_stale_temporaries, write_text


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


FILE_MODES = {0o022: 0o644, 0o027: 0o640, 0o002: 0o664}
DIRECTORY_MODES = {0o022: 0o755, 0o027: 0o750, 0o002: 0o775}


def test_a_directory_written_atomically_has_the_mode_of_a_new_directory_under_the_umask(tmp_path, umask):
    with atomic_directory(tmp_path / "model") as tmp:
        assert _mode(tmp) == 0o777 & ~umask  # not mkdtemp's 0o700
        (tmp / "unet").mkdir()
        save_file({"weight": torch.zeros(2)}, str(tmp / "unet" / "weights.safetensors"))  # safetensors writes 0600 files
        (tmp / "index.csv").write_text("a\n")
        os.symlink("unet", tmp / "link")
    os.mkdir(tmp_path / "ordinary")
    model = tmp_path / "model"
    assert _mode(model) == _mode(model / "unet") == _mode(tmp_path / "ordinary") == DIRECTORY_MODES[umask]
    assert _mode(model / "unet/weights.safetensors") == _mode(model / "index.csv") == FILE_MODES[umask]
    assert load_file(str(model / "link/weights.safetensors"))["weight"].tolist() == [0.0, 0.0]


def test_a_file_written_atomically_has_the_mode_of_a_new_file_under_the_umask(tmp_path, umask):
    write_text(tmp_path / "fit.json", "{}\n")
    (tmp_path / "ordinary.json").write_text("{}\n")
    with atomic_path(tmp_path / "model.safetensors") as tmp:
        save_file({"weight": torch.ones(3)}, str(tmp))  # replaces the temporary file by a 0600 one
    assert _mode(tmp_path / "fit.json") == _mode(tmp_path / "ordinary.json") == _mode(tmp_path / "model.safetensors") == FILE_MODES[umask]
    assert (tmp_path / "fit.json").read_text() == "{}\n" and load_file(str(tmp_path / "model.safetensors"))["weight"].tolist() == [1.0] * 3


def test_a_killed_writers_temporary_file_is_recognised_as_stale(tmp_path):
    target = tmp_path / "scores.parquet"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            assert tmp.suffix == ".parquet" and tmp.parent == tmp_path
            assert remove_stale_temporaries(target) == [tmp]  # the form the next writer cleans up after a SIGKILL
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    # what a SIGKILLed writer leaves: a name of the temporary form, which the next writer removes
    stale = tmp_path / ".scores.parquet.0a1b2c3d.parquet"
    stale.write_bytes(b"half")
    (tmp_path / ".scores.parquet.notours.parquet").write_bytes(b"other")
    assert remove_stale_temporaries(target) == [stale] and sorted(p.name for p in tmp_path.iterdir()) == [".scores.parquet.notours.parquet"]
