"""Settle each video into exactly one place: indexed (videos + segments) or failed (errors)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import apache_beam as beam


class _Settle(beam.DoFn):
    """All of a video's rows, grouped by URI, routed as a unit."""

    def process(self, element: tuple[str, dict[str, list[dict[str, Any]]]]):
        _, rows = element
        if rows["errors"]:
            # A video with any failure is not indexed: its errors say why, and a rerun redoes it whole.
            beam.metrics.Metrics.counter("plm_index", "videos_failed").inc()
            for row in rows["errors"]:
                yield beam.pvalue.TaggedOutput("errors", row)
            return
        if not rows["videos"]:
            return
        beam.metrics.Metrics.counter("plm_index", "videos_indexed").inc()
        yield from rows["segments"]
        for row in rows["videos"]:
            yield beam.pvalue.TaggedOutput("videos", row)


@dataclass
class SettleVideos(beam.PTransform):
    """{segments, videos, errors} row PCollections -> the same, with every video in one place only.

    Rows are grouped per video URI: a video with any error row contributes only its error rows;
    otherwise its videos row and all its segments rows. So every input ends up indexed or failed,
    never both, and a rerun can treat "indexed" as "done".
    """

    def __post_init__(self) -> None:
        beam.PTransform.__init__(self)

    def expand(self, tables: dict[str, beam.PCollection]):
        keyed = {name: rows | f"Key{name.title()}" >> beam.Map(lambda row: (row["uri"], row))
                 for name, rows in tables.items()}
        return (keyed
                | "ByVideo" >> beam.CoGroupByKey()
                | "Route" >> beam.ParDo(_Settle()).with_outputs("videos", "errors", main="segments"))
