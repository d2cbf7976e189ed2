"""Feature extraction and the per-category HDF5 feature store."""
