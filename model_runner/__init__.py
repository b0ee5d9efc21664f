"""PerceptionLM on Beam's RunInference: model handler, loading, prompts and output parsers."""

import torchvision_shim  # noqa: F401  (must precede any transformers import in this process)
