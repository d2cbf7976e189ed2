"""Diffusion stages of One-to-Normal: DreamBooth fine-tuning, anomaly-free pools, one-to-normal personalization.

A *generator* is a named entry of the config's ``generators:`` (parameters and defaults in ``schema.yaml``
beside this module). Its jobs write ``models/{generator}/...`` (the fine-tuned weights in diffusers' format),
``pools/{generator}/...`` and ``personalized/{generator}/...`` (PNG images and an ``index.csv``).
"""
