"""The plm-index CLI, its options and the pipeline graph."""

import torchvision_shim  # noqa: F401  (must precede any transformers import in this process)
