"""``plm-index status``: what is committed, what failed where, what the last run left, what a rerun redoes."""

from __future__ import annotations

import json
import subprocess
import sys

from index.runs import Accounting, RunRecord, write_run
from index.status import index_status
from tests.index.conftest import CommitWriter


def _run(index_dir: str, run_id: str, status: str = "running") -> None:
    record = RunRecord(run_id=run_id, status="running", started_at=f"2026-12-01T00:0{run_id[-1]}:00+00:00",
                       input="/videos", settings_hash="s0", model_id="m", pipeline_version="2")
    write_run(index_dir, record.finished(Accounting(inputs=3, indexed=2, failed=1)) if status == "finished"
              else record)


def test_status_counts_failures_by_stage_and_names_the_unfinished_run(index_dir: str,
                                                                      commit_video: CommitWriter) -> None:
    _run(index_dir, "r1", "finished")
    commit_video("a", n=3, run_id="r1")
    commit_video("b", n=2, run_id="r1")
    commit_video("c", status="failed", run_id="r1", stage="decode", error_class="DecodeError")
    _run(index_dir, "r2")  # killed: its record still says running
    commit_video("d", status="failed", run_id="r2", stage="probe", error_class="ProbeError")
    commit_video("e", status="failed", run_id="r2", stage="probe", error_class="ProbeError")
    commit_video("f", n=1, run_id="r2")

    status = index_status(index_dir)
    assert (status.videos_indexed, status.videos_failed, status.segment_rows) == (3, 3, 6)
    groups = {(g.stage, g.error_class): g.videos for g in status.failed_by_stage}
    assert groups == {("probe", "ProbeError"): 2, ("decode", "DecodeError"): 1}
    assert status.last_run is not None and status.last_run.run_id == "r2"
    assert status.last_run.status == "running" and status.last_run.committed_by_run == 3
    assert status.live_commits == 6 and status.files == 6
    text = status.text()
    assert "3 indexed, 3 failed" in text and "failed at probe (ProbeError): 2 video(s)" in text
    assert "did not finish" in text and "retries the 3 failed video(s)" in text
    assert "finishes run r2's inputs" in status.rerun_redoes()


def test_status_cli_json(index_dir: str, commit_video: CommitWriter) -> None:
    _run(index_dir, "r1", "finished")
    commit_video("a", n=2)
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", "--index", index_dir, "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["videos_indexed"] == 1 and report["segment_rows"] == 2
    assert report["last_run"]["status"] == "finished" and "inputs 3" in report["last_run"]["accounting_line"]
    assert report["rerun_redoes"].startswith("a rerun of the same command retries nothing failed")


def test_status_of_a_missing_index_says_so(tmp_path) -> None:  # noqa: ANN001
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", "--index", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "no index at" in done.stderr and "nope" in done.stderr
