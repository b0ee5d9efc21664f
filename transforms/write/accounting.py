"""The run's accounting, summed from every input's outcome after its commit, and the finished run record."""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from index.runs import Accounting, RunRecord, write_run
from schemas.work import Outcome


def accounting_of(outcome: Outcome) -> Accounting:
    """One outcome's share of the accounting (a non-video file is not an input)."""
    if outcome.kind == "ignored":
        return Accounting(ignored=1)
    return Accounting(inputs=1, indexed=int(outcome.kind == "indexed"), failed=int(outcome.kind == "failed"),
                      skipped=int(outcome.kind == "skipped"), segments=outcome.segments, errors=outcome.errors,
                      clips=outcome.clips if outcome.kind == "indexed" else 0)


class SumOutcomes(beam.CombineFn):
    """Outcomes -> one ``Accounting``."""

    def create_accumulator(self) -> Accounting:
        return Accounting()

    def add_input(self, accumulator: Accounting, outcome: Outcome) -> Accounting:
        return accumulator.plus(accounting_of(outcome))

    def merge_accumulators(self, accumulators) -> Accounting:  # type: ignore[no-untyped-def]
        total = Accounting()
        for accumulator in accumulators:
            total = total.plus(accumulator)
        return total

    def extract_output(self, accumulator: Accounting) -> Accounting:
        return accumulator


def _finish(accounting: Accounting, location: str, record: RunRecord) -> Accounting:
    write_run(location, record.finished(accounting))
    return accounting


@dataclass
class FinishRun(beam.PTransform):
    """Outcomes -> the run's ``Accounting``, written into its record as ``finished`` (after every commit)."""

    location: str
    record: RunRecord

    def __post_init__(self) -> None:
        beam.PTransform.__init__(self)

    def expand(self, outcomes: beam.PCollection) -> beam.PCollection:
        return (outcomes
                | "Sum" >> beam.CombineGlobally(SumOutcomes())
                | "Record" >> beam.Map(_finish, self.location, self.record))
