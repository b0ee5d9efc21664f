"""The manifest: a JSONL, CSV or Parquet file listing videos, validated row by row."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator


class ManifestRow(BaseModel):
    """One manifest row: a video URI plus optional per-video fields (kept for later stages)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    uri: str

    @field_validator("uri")
    @classmethod
    def _non_empty(cls, uri: str) -> str:
        uri = uri.strip()
        if not uri:
            raise ValueError("uri is empty")
        return uri

    def extras(self) -> dict[str, Any]:
        """The row's fields other than ``uri``."""
        return dict(self.__pydantic_extra__ or {})


class ManifestError(ValueError):
    """A manifest with invalid rows; the message names every bad line."""
