"""Fusion of scorer instances: validated weights over their normalised scores and maps."""
