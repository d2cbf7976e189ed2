"""Cached image features: the per-category HDF5 store (:mod:`~fsad.features.store`), the extract stage that fills
it batch by batch (:mod:`~fsad.features.extract`), what a store holds (:mod:`~fsad.features.parts`), the tensors it
hands to the scorers (:mod:`~fsad.features.types`) and their projection into the joint space
(:mod:`~fsad.features.projection`)."""
