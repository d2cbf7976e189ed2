"""Imports every built-in scorer module so that its ``@register_scorer`` runs."""

import fsad.scorers.winclip.scorer  # noqa: F401
