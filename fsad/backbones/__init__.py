"""CLIP backbones: open_clip loading, preprocessing, window masks and batched window embeddings."""
