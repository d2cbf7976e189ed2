"""Score weighting: baseline, random draws, Monte-Carlo validation on augmentations, oracle."""
