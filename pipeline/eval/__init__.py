"""Offline evaluation: PLM-VideoBench metrics and a pluggable LLM judge."""

import torchvision_shim  # noqa: F401  (must precede any transformers import in this process)
