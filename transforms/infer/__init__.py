"""The infer stage: PLM on RunInference, with the build's bookkeeping riding through in place."""

from transforms.infer.passthrough import PassThroughHandler

__all__ = ["PassThroughHandler"]
