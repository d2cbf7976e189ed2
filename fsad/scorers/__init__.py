"""Scorers: one module (or folder) per method, a common interface and a registry."""
