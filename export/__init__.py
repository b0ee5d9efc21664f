"""Turn an index back into training data for the model that made it (``plm-index export``).

- ``export.plm_sft``: perception_models' SFT JSONL format and the rule for doubtful answers
- ``export.cuts``: cutting a clip to its own file (stream copy from a keyframe, else re-encode)
- ``export.run``: ``export_index``, the command's one call: read, filter, cut, write

Reads the index through ``index.read`` and filters with ``search.query.SearchFilters``; loads
neither Beam nor torch.
"""

from export.run import ExportConfig, ExportError, ExportReport, export_index

__all__ = ["ExportConfig", "ExportError", "ExportReport", "export_index"]
