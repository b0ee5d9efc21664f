"""PerceptionLM on Beam's RunInference: model handler, loading, prompts and output parsers."""
