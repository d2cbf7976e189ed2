"""SSIM selection on hand-made cases, and what the class-image, pool and personalization jobs write."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fsad.diffusion import stages
from fsad.diffusion.config import generator_params
from fsad.diffusion.image_sets import FIXED_SUFFIX, generated_image_paths, pool_generated_ids, read_image_set
from fsad.diffusion.models import load_pipeline
from fsad.diffusion.personalize import personalize, select, ssim

from .diffusion_fixtures import one_thread, write_tiny_run  # noqa: F401

C1 = (0.01 * 1.0) ** 2  # SSIM's luminance constant at data range 1


def _constant(value: float, size: int = 16) -> Image.Image:
    return Image.fromarray(np.full((size, size, 3), round(value * 255), np.uint8))


def test_ssim_of_two_flat_images_is_its_luminance_term():
    # flat images: no variance, so SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1) exactly (Wang et al. 2004)
    a, b = round(0.2 * 255) / 255, round(0.6 * 255) / 255
    assert ssim(_constant(0.2), _constant(0.6)) == pytest.approx((2 * a * b + C1) / (a * a + b * b + C1), rel=1e-6)
    assert ssim(_constant(0.6), _constant(0.6)) == pytest.approx(1.0)


def test_selection_keeps_the_most_similar_output_or_by_option_the_least():
    rng = np.random.default_rng(0)
    query = Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8))
    pixels = np.asarray(query, dtype=np.int16)
    noisy = Image.fromarray(np.clip(pixels + rng.normal(0, 40, pixels.shape), 0, 255).astype(np.uint8))
    inverted = Image.fromarray((255 - pixels).astype(np.uint8))
    similarities = [ssim(query, image) for image in (noisy, query, inverted)]
    assert similarities[1] == pytest.approx(1.0) and similarities[2] < similarities[0] < similarities[1]
    assert select(similarities, "most_similar") == 1
    assert select(similarities, "least_similar") == 2  # eq. 2 read literally
    assert select([0.5, 0.5], "most_similar") == 0
    with pytest.raises(ValueError, match="most_similar"):
        select(similarities, "closest")


def _query(seed: int) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((32, 32, 3)) * 255).astype(np.uint8))


def test_a_querys_personalization_is_bit_identical_whatever_the_other_test_images():
    """Each query is a pipeline call of its own, so its neighbours in the job cannot change a bit of its result."""
    pipeline = load_pipeline("tiny", "cpu", torch.float32, 0)
    prompts, fixed = ["a photo of normal wood without flaw", "a photo of normal wood without damage"], "a photo of normal wood"
    (alone,) = personalize(pipeline, [_query(1)], [7], prompts, fixed, 0.3, 10, 7.5, "most_similar")
    among = personalize(pipeline, [_query(2), _query(1), _query(3)], [5, 7, 9], prompts, fixed, 0.3, 10, 7.5, "most_similar")[1]
    assert np.array_equal(np.asarray(alone.image), np.asarray(among.image))
    assert np.array_equal(np.asarray(alone.fixed_image), np.asarray(among.fixed_image))
    assert alone.candidate_ssims == among.candidate_ssims and alone.prompt == among.prompt


def test_a_querys_candidates_start_from_the_same_noise_so_only_the_prompt_tells_them_apart(monkeypatch):
    from fsad.diffusion import generation

    calls = []
    original = generation._generators

    def recording(seeds):
        generators = original(seeds)
        calls.append([g.get_state() for g in generators])
        return generators

    monkeypatch.setattr(generation, "_generators", recording)
    pipeline = load_pipeline("tiny", "cpu", torch.float32, 0)
    same, other = "a photo of normal wood without flaw", "a photo of normal wood without damage"
    (result,) = personalize(pipeline, [_query(1)], [7], [same, other], same, 0.3, 10, 7.5, "most_similar")
    (states,) = calls  # one call for the one query, holding its three candidates
    assert len(states) == 3 and all(torch.equal(state, states[0]) for state in states)
    assert not torch.equal(states[0], torch.Generator().manual_seed(8).get_state())
    # The fixed prompt equals the first one: same noise, same prompt, so the same image up to the float rounding of
    # batched kernels (rows of one batch may fall in differently blocked tiles), which moves a saved 8-bit value by at
    # most one level and only where the float value lies within that rounding of a level boundary.
    first, _, again = generation.image_to_image(pipeline, [_query(1)] * 3, [same, other, same], [7, 7, 7], 0.3, 10, 7.5, 3)
    difference = np.abs(np.asarray(first, np.int16) - np.asarray(again, np.int16))
    assert difference.max() <= 1 and (difference > 0).mean() <= 0.01
    assert result.fixed_ssim == pytest.approx(result.candidate_ssims[0], abs=1e-3)
    assert result.ssim == max(result.candidate_ssims) and result.prompt == [same, other][int(np.argmax(result.candidate_ssims))]


PARAMS = {
    "base_model": "tiny", "resolution": 32, "precision": "fp32",
    "class_images": {"count": 3, "steps": 4, "batch_size": 2},
    "dreambooth": {"steps": 3, "learning_rate": 1e-4, "log_every": 1},
    "pool": {"text_to_image": 3, "image_to_image": 2, "steps": 10, "batch_size": 2},
    "personalization": {"steps": 10},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The base model's directory, class images, a DreamBooth model, a pool and personalized images of a tiny run."""
    root = tmp_path_factory.mktemp("diffusion")
    split, manifest = write_tiny_run(root)
    params = generator_params(PARAMS, "generators.tiny")
    base = stages.base_model(params["base_model"], 0, root / "base_model")
    stages.class_images(params, base, "d", "wood", 0, "cpu", root / "class_images")
    info = stages.dreambooth(params, base, split, manifest, root / "class_images", 0, "cpu", root / "model")
    stages.pool(params, split, manifest, root / "model", 0, "cpu", root / "pool")
    stages.personalization(params, split, manifest, root / "model", 0, "cpu", root / "personalized")
    return root, params, info


def test_class_images_are_the_base_models_images_of_the_class_prompt(run):
    root, params, info = run
    index = read_image_set(root / "class_images")
    assert len(index) == 3 and set(index["prompt"]) == {"a photo of wood"}
    assert all(Image.open(f).size == (32, 32) for f in index["file"])
    assert info["class_images"] == 3 and info["class_prompt"] == "a photo of wood" and info["instance_prompt"] == "a photo of normal wood"
    assert len(info["loss_per_step"]) == 3 and info["normal_refs"] == ["img0", "img1"]


def test_the_pool_lists_the_references_then_generated_images_interleaved(run):
    root, _, _ = run
    index = read_image_set(root / "pool")
    assert list(index["kind"]) == ["reference"] * 2 + ["text_to_image", "image_to_image"] * 2 + ["text_to_image"]
    assert list(index["image_id"][:2]) == ["img0", "img1"] and (index["file"][:2] == "").all()
    assert list(index.loc[index["kind"] == "image_to_image", "source"]) == ["img0", "img1"]  # the references in turn
    assert pool_generated_ids(index) == ["t2i_0000", "i2i_0000", "t2i_0001", "i2i_0001", "t2i_0002"]
    assert sorted(p.name for p in (root / "pool").iterdir()) == sorted([*(f"{i}.png" for i in pool_generated_ids(index)), "index.csv"])
    assert all(Image.open(f).size == (32, 32) for f in index["file"] if f)
    assert set(generated_image_paths(root / "pool")) == set(pool_generated_ids(index))


def test_personalization_writes_one_image_per_test_image_with_the_prompt_chosen_by_ssim(run):
    root, params, _ = run
    index = read_image_set(root / "personalized")
    assert list(index["image_id"]) == ["img2", "img3", "img4"]
    prompts = [p.format("wood") for p in params["personalization"]["prompts"]]
    assert set(index["prompt"]) <= set(prompts)
    manifest = pd.read_csv(root / "manifest.csv").set_index("image_id")
    for row in index.itertuples():
        query = Image.open(manifest.at[row.image_id, "image_path"]).convert("RGB").resize((32, 32), Image.Resampling.BICUBIC)
        candidates = [float(v) for v in row.candidate_ssims.split(";")]
        assert len(candidates) == 3 and row.ssim == pytest.approx(max(candidates), abs=1e-6)
        assert prompts[int(np.argmax(candidates))] == row.prompt
        # the SSIM recorded is the SSIM of the written (lossless) PNG against the query
        assert ssim(query, Image.open(row.file)) == pytest.approx(row.ssim, abs=1e-6)
        assert ssim(query, Image.open(row.fixed_file)) == pytest.approx(float(row.fixed_ssim), abs=1e-6)
    paths = generated_image_paths(root / "personalized")
    assert set(paths) == {*index["image_id"], *(f"{i}{FIXED_SUFFIX}" for i in index["image_id"])}


def test_a_generator_without_a_fixed_prompt_writes_no_fixed_images(run, tmp_path):
    root, params, _ = run
    split, manifest = root / "split.json", root / "manifest.csv"
    stages.personalization({**params, "personalization": {**params["personalization"], "fixed_prompt": None}}, split, manifest, root / "model", 0, "cpu", tmp_path / "p")
    index = read_image_set(tmp_path / "p")
    assert (index["fixed_file"] == "").all() and set(generated_image_paths(tmp_path / "p")) == set(index["image_id"])
