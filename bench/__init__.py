import torchvision_shim  # noqa: F401  (must precede any transformers import in this process)

"""Benchmarks."""
