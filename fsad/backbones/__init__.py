"""CLIP backbones: open_clip loading, preprocessing, window masks, batched window embeddings, layer taps
and V-V attention.

Importing this package registers the project's own open_clip model configs, for tests and CPU smoke
runs: ``fsad-tiny``, a 2-block ViT at 112 px with a 7x7 patch grid, and ``fsad-tiny-l14``, a 4-block
ViT with ViT-L-14-336's patch size and native size (14 px patches, 336 px, 24x24 grid).
"""

from pathlib import Path

import open_clip

open_clip.add_model_config(Path(__file__).parent / "model_configs")
