"""Parse PLM's answers into index rows, with frame indices mapped to seconds."""

from transforms.parse.outputs import ParseOutputs, failed_batch_rows

__all__ = ["ParseOutputs", "failed_batch_rows"]
