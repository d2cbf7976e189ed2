"""Text side of the CLIP scorers: prompt ensembles and class-name mapping."""
