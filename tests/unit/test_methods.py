"""Method declarations: discovery, plugins, parameter schemas, and the fit orchestration's artifact."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from fsad.data.splits import Split
from fsad.features.store import FORMAT
from fsad.io import write_json
from fsad.provenance import environment
from fsad.scorers.base import FitResult
from fsad.scorers.fit import CategoryFiles, FitJob, FitScope, run_fit
from fsad.scorers.method import Fit, Method, Needs, Report
from fsad.scorers.registry import MethodError, get_method, load_method, method_modules, method_params

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


@pytest.fixture
def plugins_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    yield
    for name in ("toy_mean", "toy_mean_dataset"):
        sys.modules.pop(name, None)


def test_built_in_methods_are_found_by_their_packages_declarations():
    modules = method_modules()
    assert modules["winclip"] == "fsad.scorers.winclip.method"
    assert modules["anomalous_memory"] == "fsad.scorers.anomalous_memory.method"


def test_plugins_add_methods_and_may_not_shadow_a_built_in(plugins_on_path, tmp_path, monkeypatch):
    assert get_method("toy_mean", ["toy_mean"]).stage_names("fit") == ("epochs", "lr")
    with pytest.raises(MethodError, match="unknown method 'toy_mean'.*plugins"):
        get_method("toy_mean")
    (tmp_path / "shadow.py").write_text(
        "from pathlib import Path\nfrom fsad.scorers.method import Method\n"
        "METHOD = Method(name='winclip', score='shadow:score', schema=Path(__file__).with_name('x.yaml'))\n"
    )
    (tmp_path / "x.yaml").write_text("properties: {}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MethodError, match="already declares"):
        method_modules(["shadow"])
    with pytest.raises(MethodError, match="cannot be imported"):
        method_modules(["no_such_module_here"])


def test_parameters_get_their_schema_defaults_and_bad_values_name_the_instance(plugins_on_path):
    method = get_method("toy_mean", ["toy_mean"])
    params = method_params(method, {"method": "toy_mean", "backbone": "b", "settings": ["k1"], "epochs": 5})
    assert params == {"epochs": 5, "lr": 0.25, "scale": 1.0}
    assert method.fit_params(params) == {"epochs": 5, "lr": 0.25}
    assert method.score_params(params) == params
    with pytest.raises(MethodError, match=r"scorers\.toy\.lr: 0 is less than or equal"):
        method_params(method, {"lr": 0}, "scorers.toy")


def test_declarations_refuse_an_unknown_fit_scope():
    with pytest.raises(ValueError, match="fit scope 'category'"):
        Fit(run="m:f", scope="category")


def test_each_parameter_reaches_the_stages_its_schema_names_and_the_top_level_default_covers_the_rest(tmp_path):
    schema = tmp_path / "s.yaml"
    schema.write_text(
        "x-stages: [score]\nproperties:\n  a: {type: integer}\n  learned: {x-stages: [fit, score], type: integer}\n"
        "  compare: {x-stages: [report], type: string}\n"
    )
    report = Report(write="m:w", caption=Path("c.rst"))
    method = Method("m", "m:score", schema, needs=Needs(), fit=Fit(run="m:f"), report=report)
    assert method.score_params({"method": "m", "backbone": "b", "a": 1, "learned": 2, "compare": "x"}) == {"a": 1, "learned": 2}
    assert method.fit_params({"a": 1, "learned": 2, "compare": "x"}) == {"learned": 2}
    assert method.report_params({"a": 1, "learned": 2, "compare": "x"}) == {"compare": "x"}
    # without a top-level x-stages a property is read by the fit and the score
    (tmp_path / "plain.yaml").write_text("properties:\n  a: {type: integer}\n")
    plain = Method("p", "p:score", tmp_path / "plain.yaml", fit=Fit(run="p:f"))
    assert plain.fit_params({"a": 1}) == plain.score_params({"a": 1}) == {"a": 1}


@pytest.mark.parametrize(
    "properties, message",
    [
        ("  a: {x-stages: [train], type: integer}\n", r"x-stages of property 'a' is \['train'\]"),
        ("  a: {x-stages: [], type: integer}\n", r"x-stages of property 'a' is \[\]"),
        ("  a: {x-stages: [report], type: integer}\n", r"\['a'\] have x-stages \[report\].*declares no report"),
    ],
)
def test_a_schema_whose_stages_are_unknown_or_name_a_missing_report_is_refused(tmp_path, monkeypatch, properties, message):
    (tmp_path / "bad.yaml").write_text("properties:\n" + properties)
    (tmp_path / "bad_stages.py").write_text(
        "from pathlib import Path\nfrom fsad.scorers.method import Method\n"
        f"METHOD = Method(name='bad', score='bad:score', schema=Path({str(tmp_path / 'bad.yaml')!r}))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bad_stages", raising=False)  # each case imports its own module
    with pytest.raises(MethodError, match=message):
        load_method("bad_stages")


def _category_files(tmp_path: Path, embeddings: np.ndarray) -> tuple[CategoryFiles, Path]:
    """A store with image embeddings only (what the toy method reads), its manifest, pool and a k1 split."""
    ids = [f"img{i}" for i in range(len(embeddings))]
    store = tmp_path / "store.h5"
    (tmp_path / "store.shards").mkdir()
    with h5py.File(tmp_path / "store.shards" / "00001.h5", "w") as shard:
        for image_id, embedding in zip(ids, embeddings):
            group = shard.create_group(image_id)
            group["image_embedding"] = embedding.astype(np.float32)
            group["patch_tokens"] = np.zeros((4, 3), np.float32)
    with h5py.File(store, "w") as h5:  # the index listing that one shard (see fsad.features.store)
        h5.attrs.update(format=FORMAT, backbone_spec="{}", weights="random", grid=2, storage_dtype="float32", window_sizes=[], layers=[], vv_layers=[],
                        environment=json.dumps(environment()))
        h5.create_dataset("shards", data=["00001.h5"], dtype=h5py.string_dtype())
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"image_id": ids, "category": "c", "split": "train", "label": 0, "defect_type": "good",
                  "image_path": [str(tmp_path / f"{i}.png") for i in ids], "mask_path": ""}).to_csv(manifest, index=False)
    pool = tmp_path / "pool.json"
    write_json(pool, {"dataset": "d", "category": "c", "seed": 0, "test": ids[2:], "normal_pool": ids[:2], "anomalous_pool": []})
    split = tmp_path / "split.json"
    write_json(split, Split("d", "c", "k1", 0, 7, ids[:2], [], [], ids[2:]).__dict__)
    return CategoryFiles("d", "c", manifest, pool, store), split


def _fit(tmp_path, files, split, **params):
    return run_fit(FitJob(
        "toy", method_module="toy_mean", scope=FitScope("d", "c", "k1", 0), categories=[files], split_path=split,
        text_cache_dir=tmp_path / "_text", backbone_spec={"arch": "fsad-tiny"}, fit_params={"epochs": 2, "lr": 0.25, **params},
        weights_fallback="error", seed=0, out_model=tmp_path / "m/model.safetensors", out_info=tmp_path / "m/fit.json",
    ), torch.device("cpu"))


def test_a_fit_writes_its_tensors_and_a_fit_json_with_losses_and_provenance(plugins_on_path, tmp_path):
    embeddings = np.array([[2.0, 0.0], [0.0, 2.0], [9.0, 9.0]])
    files, split = _category_files(tmp_path, embeddings)
    _fit(tmp_path, files, split)
    info = json.loads((tmp_path / "m/fit.json").read_text())
    # the references' mean is (1, 1); two half-way steps from 0 give 0.75 of it
    torch.testing.assert_close(load_file(tmp_path / "m/model.safetensors")["mean"], torch.tensor([0.75, 0.75]))
    # loss = mean squared distance of the references: 2 + |m - (1,1)|^2 at m = 0, then at m = (0.5, 0.5)
    assert info["loss_per_epoch"] == [4.0, 2.5]
    assert info | {"seconds": 0} == info | {
        "scorer": "toy", "method": "toy_mean", "scope": "run", "fit_for": {"dataset": "d", "category": "c", "setting": "k1", "run": 0}, "parameters": {"epochs": 2, "lr": 0.25},
        "weights": "random", "trained_on": ["d/c"], "tensors": {"mean": [2]}, "seconds": 0,
    }
    assert info["environment"]["torch"] == torch.__version__ and info["environment"]["python"] == sys.version.split()[0]


def test_a_fit_that_learns_non_finite_values_writes_nothing(plugins_on_path, tmp_path, monkeypatch):
    files, split = _category_files(tmp_path, np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    import toy_mean

    monkeypatch.setattr(toy_mean, "fit", lambda ctx: FitResult({"mean": torch.tensor([float("nan"), 0.0])}, [1.0]))
    with pytest.raises(RuntimeError, match="non-finite values in \\['mean'\\]"):
        _fit(tmp_path, files, split)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_a_missing_dependency_of_a_method_module_names_the_package_not_the_plugins_list(tmp_path, monkeypatch):
    from fsad.scorers.registry import MethodError, load_method

    (tmp_path / "needs_a_package.py").write_text("import fsad_not_installed_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MethodError, match="needs the package 'fsad_not_installed_pkg', which is not installed"):
        load_method("needs_a_package")
    with pytest.raises(MethodError, match="check the config's plugins list"):
        load_method("fsad_no_such_plugin_module")
