"""FAPrompt and AnomalyCLIP: learned abnormality prompts for zero-shot anomaly detection across datasets."""
