"""Configs (pydantic, frozen), records that flow through the pipeline, and pyarrow table schemas."""

import torchvision_shim  # noqa: F401  (must precede any transformers import in this process)
