"""Datasets: adapters, downloads, manifests, few-shot splits and augmentations."""
