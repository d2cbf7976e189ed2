"""DevPrompt (deviation-based prompt learning, Poudineh & Lalonde) and PromptAD, its baseline without the deviation loss."""
