"""Nothing from the test split reaches training: each stage that learns or generates, run on the tiny world under a
read audit (:mod:`tests.unit.read_audit`), reads only what its scope allows.

What a stage read is observed inside it, never taken from what it wrote in its own index: the files the process
opened, the ids each feature store was asked for, and, spied on at the call, the pixels a generator or an encoder
received and the arrays the calibration and the weight validation received. Images are compared by their decoded
pixels, so a stage that reaches a test image by another path (a copy, another id) fails as well.

Dataset-scope fits (faprompt, one_to_normal) train on one world and are checked against a second, evaluated world
(other dataset name, other pixels, the same image ids): everything they read must be the training world's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from fsad.data.manifest import read_manifest
from fsad.data.splits import Split, pool_image_ids, read_split
from fsad.diffusion import stages
from fsad.diffusion.config import generator_params
from fsad.diffusion.image_sets import read_image_set
from fsad.features.store import FeatureStore
from fsad.io import read_json
from fsad.backbones.session import BackboneSession

from .diffusion_fixtures import one_thread  # noqa: F401
from .read_audit import ReadAudit, read_audit
from .tiny_world import World, build_world

RESOLUTION = 32
DEVPROMPT = {"epochs": 2, "synthetic_anomalies": 4, "reference_draws": 64, "vv_block": 2, "defect_types": ["spot", "cutpaste"]}
FAPROMPT = {"train_dataset": "toy", "vv_layers": [2], "epochs": 1, "batch_size": 4, "dap_patches": 5}
ONE_TO_NORMAL = {"layers": [1, 2], "text_map_epochs": 1, "text_map_batch_size": 4}
ANOMALOUS_MEMORY = {"window_sizes": [2, 3], "n_augmentations": 4, "n_draws": 8, "distributions": ["uniform"], "score_weights": "uniform"}
GENERATOR = {
    "base_model": "tiny", "resolution": RESOLUTION, "precision": "fp32",
    "class_images": {"count": 2, "steps": 2, "batch_size": 2},
    "dreambooth": {"steps": 2, "log_every": 1},
    "pool": {"text_to_image": 1, "image_to_image": 2, "steps": 4, "batch_size": 2},
    "personalization": {"steps": 4},
}


# --- images, ids and files ---------------------------------------------------------------------------------------


def rgb(image: Image.Image | str | Path, size: int | None = None) -> np.ndarray:
    """``(H, W, 3)`` uint8 pixels, resized as the generators square their inputs when ``size`` is given."""
    if not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            image = opened.convert("RGB")
    image = image.convert("RGB")
    if size is not None:
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image).copy()


def digest(pixels: np.ndarray) -> str:
    return hashlib.sha256(repr(pixels.shape).encode() + np.ascontiguousarray(pixels).tobytes()).hexdigest()


@dataclass
class Dataset:
    """A world's manifest and split, with the files and pixels of its images (read here, outside any stage)."""

    world: World
    split: Split
    manifest: pd.DataFrame

    def image_file(self, image_id: str) -> Path:
        return Path(self.manifest.at[image_id, "image_path"]).resolve()

    def files(self, ids: list[str]) -> set[Path]:
        return {self.image_file(i) for i in ids}

    def masks(self, ids: list[str]) -> set[Path]:
        return {Path(p).resolve() for p in self.manifest.loc[ids, "mask_path"] if p}

    def every_mask(self) -> set[Path]:
        return self.masks(list(self.manifest.index))

    def every_file(self) -> set[Path]:
        """Every image and mask file of the dataset, test split or not."""
        return self.files(list(self.manifest.index)) | self.every_mask()

    def read(self, audit: ReadAudit) -> set[Path]:
        """The dataset's image and mask files the audited block opened for reading."""
        return audit.files_read() & self.every_file()

    def digests(self, ids: list[str], size: int | None = None) -> dict[str, str]:
        return {i: digest(rgb(self.image_file(i), size)) for i in ids}

    def test_digests(self, size: int | None = None) -> set[str]:
        return set(self.digests(self.split.test, size).values())


def dataset(world: World, setting: str) -> Dataset:
    return Dataset(world, read_split(world.splits[setting]), read_manifest(world.manifest).set_index("image_id", drop=False))


def equal_share(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels (all channels) two same-sized images agree on exactly."""
    return float((a == b).all(axis=-1).mean()) if a.shape == b.shape else 0.0


# --- spies --------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What an audited stage read: the audit and, per spied call, what each call received."""

    audit: ReadAudit
    calls: dict[str, list[Any]] = field(default_factory=dict)
    result: Any = None


def spy(mp: pytest.MonkeyPatch, owner: Any, name: str, calls: list, record: Callable[..., Any]) -> None:
    """Replace ``owner.name`` by a wrapper appending ``record(*args, **kwargs)`` (taken before the call) to ``calls``."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append(record(*args, **kwargs))
        return original(*args, **kwargs)

    mp.setattr(owner, name, wrapper)


def spy_encoded_images(mp: pytest.MonkeyPatch, calls: list) -> None:
    """Record the pixels of every image a fit or score step encodes outside the feature store."""
    original = BackboneSession.image_encoder

    def image_encoder(self, needs):
        encode = original(self, needs)

        def recording(images):
            calls.append([rgb(image) for image in images])
            return encode(images)

        return recording

    mp.setattr(BackboneSession, "image_encoder", image_encoder)


def test_the_recorder_sees_every_way_of_reading_and_puts_the_library_back(world, tmp_path):
    import os

    original_open, original_load = Image.open, FeatureStore.load
    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"x")
    image = dataset(world, "k1").image_file(read_split(world.splits["k1"]).test[0])
    with read_audit() as outer:
        os.close(os.open(raw, os.O_RDONLY))
        with read_audit() as inner:
            Image.open(image).load()
        FeatureStore(world.store).load(read_split(world.splits["k1"]).normal_refs)
    assert {raw.resolve(), image} <= outer.files_read() and outer.pil_paths() == {image}
    assert inner.files_read() & {raw.resolve(), image} == {image} and not inner.loads
    assert outer.store_ids(world.store) == set(read_split(world.splits["k1"]).normal_refs) and not outer.store_ids(tmp_path / "other.h5")
    assert Image.open is original_open and FeatureStore.load is original_load
    with read_audit() as after:
        pass
    assert not after.opened


# --- worlds -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    """The training dataset ``toy`` (and the world of the run-scope stages)."""
    return build_world(tmp_path_factory.mktemp("training"), window_sizes=(2, 3))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> World:
    """A second dataset: same ids, other pixels; dataset-scope fits trained on ``toy`` must never read it."""
    return build_world(tmp_path_factory.mktemp("evaluated"), window_sizes=(2, 3), dataset="evaluated", seed=1)


@pytest.fixture(scope="module")
def two_datasets(world, evaluated) -> tuple[Dataset, Dataset]:
    return dataset(world, "zs"), dataset(evaluated, "zs")


def test_the_two_datasets_share_ids_but_no_image(two_datasets):
    """The premise of the dataset-scope checks: only paths, stores and pixels tell the datasets apart, never ids."""
    training, other = two_datasets
    assert list(training.manifest.index) == list(other.manifest.index)
    assert not set(training.digests(list(training.manifest.index)).values()) & set(other.digests(list(other.manifest.index)).values())
    assert training.world.store != other.world.store and FeatureStore(other.world.store).image_ids() == FeatureStore(training.world.store).image_ids()


# --- run-scope fit: devprompt --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def devprompt_fit(world) -> Run:
    import fsad.scorers.devprompt.fit as devprompt_fit
    import fsad.scorers.devprompt.training as devprompt_training

    calls: dict[str, list] = {"shots": [], "encoded": [], "calibration": [], "training": [], "reference": []}
    with pytest.MonkeyPatch.context() as mp:
        spy(mp, devprompt_fit, "synthetic_anomalies", calls["shots"], lambda shots, *a, **k: [np.array(s) for s in shots])
        spy_encoded_images(mp, calls["encoded"])
        spy(mp, devprompt_training, "calibrated_scoring", calls["calibration"], lambda similarities, mu, sigma: similarities.detach().clone())
        spy(mp, devprompt_fit, "train_prompts", calls["training"], lambda model, learner, normal, anomalous, *a, **k: (normal.detach().clone(), tuple(anomalous.shape)))
        spy(mp, devprompt_fit, "reference_statistics", calls["reference"], lambda *args, **kwargs: (args, kwargs))
        with read_audit() as audit:
            model = world.fit("devprompt", DEVPROMPT, setting="k2")
    return Run(audit, calls, model)


def test_the_devprompt_fit_reads_the_runs_normal_shots_and_nothing_of_the_test_split(world, devprompt_fit):
    data = dataset(world, "k2")
    refs = data.split.normal_refs
    assert len(refs) == 2 and not set(refs) & set(data.split.test)
    assert data.read(devprompt_fit.audit) == data.files(refs)  # no test image, no validation image, no mask
    assert devprompt_fit.audit.stores() == {world.store.resolve()}
    assert devprompt_fit.audit.store_ids() == set(refs)


def test_devprompts_synthetic_anomalies_are_made_from_the_normal_shots_only(world, devprompt_fit):
    data = dataset(world, "k2")
    refs = {i: rgb(data.image_file(i)) for i in data.split.normal_refs}
    tests = [rgb(data.image_file(i)) for i in data.split.test]
    (shots,) = devprompt_fit.calls["shots"]
    assert sorted(map(digest, shots)) == sorted(map(digest, refs.values()))
    (encoded,) = devprompt_fit.calls["encoded"]
    assert len(encoded) == DEVPROMPT["synthetic_anomalies"]
    for image in encoded:
        # a defect covers a small part: each example is mostly one of the shots, never mostly a test image
        assert max(equal_share(image, ref) for ref in refs.values()) > 0.5
        assert max(equal_share(image, test) for test in tests) < 0.5
        assert digest(image) not in data.test_digests()


def test_devprompts_calibration_and_training_see_the_normal_shots_tokens(world, devprompt_fit):
    data = dataset(world, "k2")
    refs, block = data.split.normal_refs, DEVPROMPT["vv_block"]
    visual_proj = load_file(devprompt_fit.result)["visual_proj"]
    candidates = [*data.split.test, *refs, *data.split.validation]
    tokens = FeatureStore(world.store).load(candidates, vv_layers=[block]).vv_layers[block]
    projected = torch.nn.functional.normalize(tokens.float() @ visual_proj.float(), dim=-1)
    ((normal, anomalous_shape),) = devprompt_fit.calls["training"]
    assert anomalous_shape[0] == DEVPROMPT["synthetic_anomalies"]
    for row in normal:
        distances = (projected - row).flatten(1).norm(dim=1)
        assert distances.min() < 1e-4 and candidates[int(distances.argmin())] in refs
    assert len(normal) == len(refs)
    # the scale and bias are calibrated on the normal shots alone: one row of similarities per shot, no synthetic one
    (similarities,) = devprompt_fit.calls["calibration"]
    assert similarities.shape == (len(refs), tokens.shape[1])
    # the reference scores are drawn from N(0, 1): a count and a generator, no image data
    ((args, kwargs),) = devprompt_fit.calls["reference"]
    assert args[0] == DEVPROMPT["reference_draws"] and isinstance(args[1], torch.Generator) and not kwargs


# --- dataset-scope fits: faprompt, one_to_normal -------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset_fits(world, evaluated, two_datasets) -> dict[str, Run]:
    runs = {}
    for method, params in (("faprompt", FAPROMPT), ("one_to_normal", ONE_TO_NORMAL)):
        with read_audit() as audit:
            world.fit(method, params, setting="zs", categories=[world.category_files()])
        runs[method] = Run(audit)
    return runs


def _assert_reads_the_training_dataset_only(run: Run, training: Dataset, other: Dataset) -> None:
    assert not run.audit.files_read() & other.every_file()
    assert not any(other.world.root.resolve() in path.parents for path in run.audit.files_read())
    assert run.audit.stores() == {training.world.store.resolve()}


def test_the_faprompt_fit_reads_the_training_datasets_test_split_and_masks_only(two_datasets, dataset_fits):
    training, other = two_datasets
    run = dataset_fits["faprompt"]
    _assert_reads_the_training_dataset_only(run, training, other)
    pool = read_json(training.world.pool)
    expected = [i for i in pool_image_ids(pool) if training.manifest.at[i, "split"] == "test"]  # train_split: test
    assert run.audit.store_ids() == set(expected)
    read_masks = run.audit.files_read() & (training.every_mask() | other.every_mask())
    assert read_masks == training.masks(expected) and read_masks  # its anomalies' masks, none of the evaluated dataset
    assert not run.audit.files_read() & training.files(list(training.manifest.index))  # tokens from the store, not files


def test_the_one_to_normal_fit_reads_the_training_datasets_store_and_no_mask(two_datasets, dataset_fits):
    training, other = two_datasets
    run = dataset_fits["one_to_normal"]
    _assert_reads_the_training_dataset_only(run, training, other)
    assert run.audit.store_ids() == set(pool_image_ids(read_json(training.world.pool)))
    assert not run.audit.files_read() & (training.every_file() | other.every_file())  # image labels only


# --- weight validation inside the anomalous memory's score step ----------------------------------------------------


@pytest.fixture(scope="module")
def anomalous_memory_score(world) -> Run:
    import fsad.scorers.anomalous_memory.scorer as scorer

    calls: dict[str, list] = {"augment": [], "encoded": [], "scores": [], "validation": []}
    with pytest.MonkeyPatch.context() as mp:
        spy(mp, scorer, "augment", calls["augment"], lambda image, mask, n, seed: (rgb(image), None if mask is None else np.asarray(mask).copy()))
        spy_encoded_images(mp, calls["encoded"])
        original_scores = scorer.anomalous_memory_scores

        def scores(features, *args, **kwargs):
            out = original_scores(features, *args, **kwargs)
            calls["scores"].append((list(features.image_ids), features.image_embeddings.clone(), out.sub_scores.clone()))
            return out

        mp.setattr(scorer, "anomalous_memory_scores", scores)
        spy(mp, scorer, "validate_weights", calls["validation"], lambda vs, vl, ts, tl, *a, **k: (np.array(vs), np.array(vl), np.array(ts), np.array(tl)))
        with read_audit() as audit:
            out = world.score("anomalous_memory", ANOMALOUS_MEMORY, setting="a1")
    return Run(audit, calls, out)


def test_the_weight_validation_augments_the_anomalous_reference_and_validation_normals_only(world, anomalous_memory_score):
    data = dataset(world, "a1")
    split, calls = data.split, anomalous_memory_score.calls
    (ref,) = split.anomalous_refs
    assert split.validation and not {ref, *split.validation} & set(split.test)
    sources = [digest(image) for image, _ in calls["augment"]]
    assert sorted(sources) == sorted(data.digests([ref, *split.validation]).values())
    assert not set(sources) & data.test_digests()
    (mask,) = [m for _, m in calls["augment"] if m is not None]
    assert np.array_equal(mask > 0, rgb(data.masks([ref]).pop())[..., 0] > 0)
    # files: the reference, its mask and the validation normals; test images reach the score step through the store only
    assert data.read(anomalous_memory_score.audit) == data.files([ref, *split.validation]) | data.masks([ref])
    assert anomalous_memory_score.audit.store_ids() == {ref, *split.test}


def test_the_weight_search_receives_the_augmentations_scores_and_the_manifests_test_labels(world, anomalous_memory_score):
    data = dataset(world, "a1")
    calls = anomalous_memory_score.calls
    (encoded,) = calls["encoded"]
    n = ANOMALOUS_MEMORY["n_augmentations"]
    assert len(encoded) == n and not {digest(image) for image in encoded} & data.test_digests()
    ((validation_scores, validation_labels, test_scores, test_labels),) = calls["validation"]
    assert list(validation_labels) == [1] * ((n + 1) // 2) + [0] * (n // 2)
    assert list(test_labels) == list(data.manifest.loc[data.split.test, "label"])
    test_calls = [c for c in calls["scores"] if c[0] == data.split.test]
    augmented_calls = [c for c in calls["scores"] if c[0] != data.split.test]
    assert len(test_calls) == 1 and len(augmented_calls) == 1
    assert np.allclose(validation_scores, augmented_calls[0][2].numpy()) and np.allclose(test_scores, test_calls[0][2].numpy())
    # no validation row is a test image's sub-scores
    assert not any(np.allclose(row, test_row) for row in validation_scores for test_row in test_scores)


# --- diffusion stages ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diffusion(world, tmp_path_factory) -> dict[str, Run]:
    import fsad.diffusion.dreambooth as dreambooth
    import fsad.diffusion.personalize as personalize

    root = tmp_path_factory.mktemp("generated")
    params = generator_params(GENERATOR, "generators.tiny")
    split, manifest = world.splits["k2"], world.manifest
    runs: dict[str, Run] = {}
    with pytest.MonkeyPatch.context() as mp:
        with read_audit() as audit:
            base = stages.base_model(params["base_model"], 0, root / "base_model")
        runs["base_model"] = Run(audit)
        with read_audit() as audit:
            stages.class_images(params, base, world.dataset, "widget", 0, "cpu", root / "class_images")
        runs["class_images"] = Run(audit)

        training: list = []
        spy(mp, dreambooth, "train_dreambooth", training, lambda pipeline, instance, klass, *a, **k: (instance.clone(), None if klass is None else klass.clone()))
        with read_audit() as audit:
            stages.dreambooth(params, base, split, manifest, root / "class_images", 0, "cpu", root / "model")
        runs["dreambooth"] = Run(audit, {"training": training})

        img2img: list = []  # the single-prompt pool's one batch, or one batch per image of the personalization process
        original = personalize.image_to_image
        spy(mp, stages, "image_to_image", img2img, lambda pipeline, images, *a, **k: [rgb(image) for image in images])
        spy(mp, personalize, "image_to_image", img2img, lambda pipeline, images, *a, **k: [rgb(image) for image in images])
        with read_audit() as audit:
            stages.pool(params, split, manifest, root / "model", 0, "cpu", root / "pool")
        runs["pool"] = Run(audit, {"image_to_image": img2img}, root / "pool")

        queries: list = []

        def per_query(pipeline, images, *args, **kwargs):
            outputs = original(pipeline, images, *args, **kwargs)
            queries.append(([rgb(image) for image in images], [rgb(image) for image in outputs]))
            return outputs

        mp.setattr(personalize, "image_to_image", per_query)
        with read_audit() as audit:
            stages.personalization(params, split, manifest, root / "model", 0, "cpu", root / "personalized")
        runs["personalization"] = Run(audit, {"queries": queries}, root / "personalized")
    runs["class_images"].result = root / "class_images"
    return runs


def test_class_images_read_no_image_of_the_dataset(world, diffusion):
    data = dataset(world, "k2")
    assert not data.read(diffusion["base_model"].audit)  # nor does the base model's job
    assert not data.read(diffusion["class_images"].audit)
    assert not any(world.root.resolve() / "images" in path.parents for path in diffusion["class_images"].audit.pil_paths())


def test_dreambooth_trains_on_the_runs_normal_references_and_the_class_images_only(world, diffusion):
    data = dataset(world, "k2")
    refs = data.split.normal_refs
    run = diffusion["dreambooth"]
    assert data.read(run.audit) == data.files(refs)
    ((instance, klass),) = run.calls["training"]
    received = [digest(np.rint((image.permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)) for image in instance]
    assert sorted(received) == sorted(data.digests(refs, RESOLUTION).values())
    assert not set(received) & data.test_digests(RESOLUTION)
    class_files = read_image_set(diffusion["class_images"].result)["file"]
    class_received = [digest(np.rint((image.permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)) for image in klass]
    assert sorted(class_received) == sorted(digest(rgb(f, RESOLUTION)) for f in class_files)


def test_the_pool_generates_from_the_normal_references_and_holds_no_test_image(world, diffusion):
    data = dataset(world, "k2")
    refs = data.split.normal_refs
    run = diffusion["pool"]
    assert data.read(run.audit) == data.files(refs)
    expected = data.digests(refs, RESOLUTION)
    # the personalization process (the default): one call per img2img image, every candidate made from its reference
    calls = run.calls["image_to_image"]
    assert len(calls) == GENERATOR["pool"]["image_to_image"]
    for i, sources in enumerate(calls):
        assert {digest(image) for image in sources} == {expected[refs[i % len(refs)]]}
    generated = [f for f in read_image_set(run.result)["file"] if f]
    assert len(generated) == GENERATOR["pool"]["text_to_image"] + GENERATOR["pool"]["image_to_image"]
    for path in generated:
        assert digest(rgb(path)) not in data.test_digests(RESOLUTION) | data.test_digests()


def test_each_personalized_image_comes_from_its_own_query_only(world, diffusion):
    data = dataset(world, "k2")
    run = diffusion["personalization"]
    assert data.read(run.audit) == data.files(data.split.test)  # the queries; no reference, no mask
    queries = run.calls["queries"]
    expected = data.digests(data.split.test, RESOLUTION)
    assert len(queries) == len(data.split.test)
    for image_id, (inputs, _) in zip(data.split.test, queries):
        assert {digest(image) for image in inputs} == {expected[image_id]}
    index = read_image_set(run.result)
    assert list(index["image_id"]) == data.split.test
    for row, (_, outputs) in zip(index.itertuples(), queries):
        assert digest(rgb(row.file)) in {digest(image) for image in outputs}
        assert digest(rgb(row.fixed_file)) == digest(outputs[-1])
