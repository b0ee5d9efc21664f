"""Beam's flags as the build reads them: where the workers run decides what the launcher starts ahead."""

from __future__ import annotations

import pytest

from pipeline.options import beam_options, workers_run_here


@pytest.mark.parametrize(("flags", "here"), [
    ([], True),  # the embedded default
    (["--direct_running_mode=multi_threading"], True),
    (["--direct_running_mode=multi_processing"], False),
    (["--runner=FnApiRunner", "--environment_type=EXTERNAL", "--environment_config=localhost:50000"], False),
    (["--runner=PortableRunner", "--job_endpoint=localhost:8099"], False),
    (["--runner=DataflowRunner"], False),
])
def test_workers_run_here_only_for_the_embedded_runner(flags: list[str], here: bool) -> None:
    assert workers_run_here(beam_options(flags)) is here
