"""Text side of the CLIP scorers: prompt ensembles and their parameters, class-name mapping, learned prompts."""
