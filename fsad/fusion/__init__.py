"""Sub-score weights (not a network's weights): the baseline, random draws, Monte-Carlo validation on augmentations,
the oracle."""
