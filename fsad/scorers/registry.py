"""Imports every built-in scorer module so that its ``@register_scorer`` runs."""

import fsad.scorers.anomalous_memory.scorer  # noqa: F401
import fsad.scorers.winclip.scorer  # noqa: F401
