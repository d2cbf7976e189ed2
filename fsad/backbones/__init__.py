"""CLIP backbones: open_clip loading, preprocessing, window masks and batched window embeddings.

Importing this package registers the project's own open_clip model configs (``fsad-tiny``: a 2-layer
ViT at 112 px with a 7x7 patch grid, for tests and CPU smoke runs).
"""

from pathlib import Path

import open_clip

open_clip.add_model_config(Path(__file__).parent / "model_configs")
