"""fsad-bench: few-shot and zero-shot industrial anomaly detection benchmark library."""

__version__ = "0.1.0"
