"""The CUDA paths: window embeddings, layer and V-V taps, bf16 autocast, scoring, the feature store and device claims on a GPU.

Skipped where no GPU is visible (CI); run on a GPU machine with ``FSAD_REQUIRE_CUDA=1 python -m pytest tests/unit/test_cuda.py``
(the variable makes a machine whose GPU torch cannot see fail instead of skip).
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

from fsad.backbones.loading import load_backbone
from fsad.backbones.window_embeddings import encode_images
from fsad.devices import claim_device, visible_devices
from fsad.features.extract import update_store
from fsad.features.store import FeatureStore
from fsad.scorers.winclip.torch_model import build_reference_memory, winclip_scores
from fsad.text.prompt_ensembles import text_embeddings

from .test_devices import start_holder

pytestmark = pytest.mark.requires(None if torch.cuda.is_available() else "needs a CUDA GPU", "FSAD_REQUIRE_CUDA")

TINY = {"arch": "fsad-tiny", "pretrained": "none", "image_size": 112}
WINDOWS = [2, 3, 7]


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.flatten(0, -2).double(), b.flatten(0, -2).double(), dim=-1)


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(6, 3, 112, 112, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def cpu_features(pixels):
    return encode_images(load_backbone(TINY, "cpu"), pixels, WINDOWS)


@pytest.mark.parametrize("precision,min_cosine", [("fp32", 0.9999), ("bf16", 0.99)])
def test_cuda_features_match_the_cpu(pixels, cpu_features, precision, min_cosine):
    backbone = load_backbone(TINY | {"precision": precision}, "cuda")
    assert backbone.autocast_dtype == (torch.bfloat16 if precision == "bf16" else None)
    features = encode_images(backbone, pixels, WINDOWS)
    assert features.image_embeddings.device.type == "cuda" and features.image_embeddings.dtype == torch.float32
    pairs = [(features.image_embeddings, cpu_features.image_embeddings), (features.patch_tokens, cpu_features.patch_tokens)]
    pairs += [(features.windows[k], cpu_features.windows[k]) for k in WINDOWS]
    for gpu, cpu in pairs:
        assert gpu.shape == cpu.shape
        assert cosine(gpu.cpu(), cpu).min() > min_cosine


@pytest.mark.parametrize("precision,min_cosine", [("fp32", 0.9999), ("bf16", 0.99)])
def test_cuda_layer_and_vv_tokens_match_the_cpu(pixels, precision, min_cosine):
    cpu = encode_images(load_backbone(TINY, "cpu"), pixels, [], layers=[1, 2], vv_layers=[2])
    gpu = encode_images(load_backbone(TINY | {"precision": precision}, "cuda"), pixels, [], layers=[1, 2], vv_layers=[2])
    for block in (1, 2):
        assert cosine(gpu.layers[block].cpu(), cpu.layers[block]).min() > min_cosine
    assert gpu.vv_layers[2].dtype == torch.float32 and cosine(gpu.vv_layers[2].cpu(), cpu.vv_layers[2]).min() > min_cosine


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_winclip_scores_rank_as_on_the_cpu(pixels, cpu_features, precision):
    cpu_backbone = load_backbone(TINY, "cpu")
    gpu_backbone = load_backbone(TINY | {"precision": precision}, "cuda")
    outputs = []
    for backbone, test in ((cpu_backbone, cpu_features), (gpu_backbone, encode_images(gpu_backbone, pixels, WINDOWS))):
        text = text_embeddings(backbone.encode_text, "object", "anomalib")
        memory = build_reference_memory(encode_images(backbone, pixels[:1], [2, 3]), [2, 3])
        outputs.append(winclip_scores(test, text, [2, 3], memory=memory))
    cpu, gpu = outputs
    rho = spearmanr(cpu.image_scores.numpy(), gpu.image_scores.cpu().numpy()).statistic
    assert rho > 0.99
    assert cosine(gpu.maps.cpu().flatten(1), cpu.maps.flatten(1)).min() > 0.999


def test_feature_store_written_on_cuda_reads_back_like_the_cpu_one(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for i in range(3):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        paths[f"img{i}"] = str(path)
    stores = {}
    for device in ("cpu", "cuda"):
        backbone = load_backbone(TINY | {"precision": "fp32"}, device)
        store = FeatureStore(tmp_path / f"{device}.h5")
        update_store(store, backbone, paths, [2, 3], batch_size=2)
        stores[device] = store.load(list(paths), [2, 3])
    for k in (2, 3):
        assert cosine(stores["cuda"].windows[k], stores["cpu"].windows[k]).min() > 0.9999


def test_a_second_process_waits_for_a_real_gpu_until_the_holder_is_sigkilled(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("FSAD_FAKE_GPUS", raising=False)
    # both processes see one GPU, the first this one sees
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible_devices(torch.cuda.device_count())[0])
    holder, device = start_holder(tmp_path)
    try:
        assert device == "cuda:0" and [p.name for p in tmp_path.iterdir()] == [f"gpu-{os.environ['CUDA_VISIBLE_DEVICES']}.lock"]
        with pytest.raises(TimeoutError, match="stayed locked"):
            with claim_device(lock_dir=tmp_path, poll_seconds=0.05, timeout=1.0):
                pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        with claim_device(lock_dir=tmp_path, poll_seconds=0.05, timeout=10) as device:
            assert device == "cuda:0"
    finally:
        holder.kill()
        holder.wait()
