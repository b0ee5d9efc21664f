"""PTransforms and DoFns, one folder per pipeline stage."""

import torchvision_shim  # noqa: F401  (must precede any transformers import in this process)
