"""Anomalous-memory scorer (anomalous samples for few-shot anomaly detection)."""
