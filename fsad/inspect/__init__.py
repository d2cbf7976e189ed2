"""Inspect: score a folder of new images with one saved setup (scorer instance, dataset/category, setting, run)."""
