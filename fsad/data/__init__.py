"""Datasets: adapters (one module per kind, options in ``adapters/<kind>.schema.yaml``), downloads, manifests, the
reference pools and few-shot splits, images and masks, augmentations."""
