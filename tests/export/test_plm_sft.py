"""``plm-index export --format plm-sft``: a real index exported and read back against the index.

The index is built by the real pipeline with the tiny PLM (``conftest.py``); the export is read
back as JSONL and checked row for row against ``index.read`` (the index's one reader); frame
indices are checked against the frames PyAV decodes from the files; cut clips are decoded.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from core.sampling import plm_loader_positions
from export import ExportConfig, ExportError, export_index
from export.plm_sft import Answer, doubt, loader_positions, loader_time
from index import read_current
from pipeline.cli import main
from search.query import SearchFilters
from tests.export.conftest import FPS, TASKS


def read_lines(out: Path) -> dict[str, list[dict[str, Any]]]:
    """Every exported line by task file."""
    return {p.stem: [json.loads(line) for line in p.read_text().splitlines()] for p in sorted(out.glob("*.jsonl"))}


def index_answers(index: str) -> list[dict[str, Any]]:
    """One dict per answer the index holds (RDCap's per-event rows of one prompt as one)."""
    answers: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in read_current(index, "segments").to_pylist():
        if row["task"] == "rdcap":
            key = ("rdcap", row["video_id"], row["clip_index"], row["region_id"])
        else:
            key = (row["task"], row["video_id"], row["clip_index"], row["region_id"], row["question"], row["prompt"])
        assert key not in answers or row["task"] == "rdcap", f"two rows for one answer: {key}"
        entry = answers.setdefault(key, {**row, "rows": []})
        entry["rows"].append(row)
    return list(answers.values())


def looks_doubtful(answer: dict[str, Any]) -> bool:
    """The rule, written out from the columns (an oracle for the export's own rule)."""
    rows = answer["rows"]
    return any(r["parse_error"] or r["clamped"] or r["benchmark_reading_ok"] is False or r["correct"] is False
               or not (r["raw_output"] or "").strip() for r in rows)


def answer_key(task: str, source: dict[str, Any], human: str) -> tuple[Any, ...]:
    return (task, source["video_id"], source["clip_index"], source["region_id"], human)


def frame_times(path: str) -> list[float]:
    """Start times (s from the first frame) of every frame of ``path``, decoded with PyAV."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        pts = sorted(frame.pts for frame in container.decode(stream))
        return [float((p - pts[0]) * stream.time_base) for p in pts]


def frames_at(path: str, indices: list[int]) -> dict[int, np.ndarray]:
    """Decoded RGB frames of ``path`` at these indices (presentation order)."""
    with av.open(path) as container:
        frames = sorted(((f.pts, f) for f in container.decode(container.streams.video[0])), key=lambda x: x[0])
        return {i: frames[i][1].to_ndarray(format="rgb24").astype(int) for i in indices}


@pytest.fixture(scope="module")
def everything(built_index: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole index exported, doubtful answers kept."""
    out = tmp_path_factory.mktemp("all")
    report = export_index(ExportConfig(index=built_index, out=str(out), keep_doubtful=True))
    assert not report.cut_errors and not report.left_out
    return out


def test_round_trip_every_answer_once_with_its_prompt_answer_times_and_boxes(everything: Path, built_index: str,
                                                                               source_videos: dict[str, str]) -> None:
    lines = read_lines(everything)
    answers = index_answers(built_index)
    by_key = {answer_key(a["task"], a, a["prompt"]): a for a in answers}
    assert {task: len(v) for task, v in lines.items()} == dict(Counter(a["task"] for a in answers))
    assert set(lines) == set(TASKS)
    decoded = {path: frame_times(path) for path in source_videos.values()}
    seen = set()
    for task, task_lines in lines.items():
        for line in task_lines:
            human, assistant = line["conversations"]
            assert (human["from"], assistant["from"]) == ("human", "assistant")
            key = answer_key(task, line["source"], human["value"])
            assert key not in seen
            seen.add(key)
            row = by_key[key]
            # The prompt as PLM was asked, and the model's answer as it generated it.
            assert human["value"] == row["prompt"] and assistant["value"] == row["raw_output"].strip()
            assert line["video"] == row["uri"] and line["source"]["uri"] == row["uri"]
            # The trainer's loader, run on the exported span, takes the very frames the model saw:
            # their decoded times are the index's sampled times.
            times = decoded[line["video"]]
            picked = loader_positions(line["start_time"], line["end_time"], FPS, len(times), 32)
            assert [times[p] for p in picked] == pytest.approx(row["frame_timestamps"], abs=1e-6)
            assert line["start_time"] == pytest.approx(row["frame_timestamps"][0], abs=1e-6)
            assert line["end_time"] == pytest.approx(row["frame_timestamps"][-1], abs=1e-6)
            if row["region_id"] is None:
                assert "bbox_map" not in line
                continue
            # Region boxes in the format's video region form: file frame index -> [x1, y1, x2, y2].
            expected = {str(picked[b["frame"]]): [b["x1"], b["y1"], b["x2"], b["y2"]] for b in row["region_boxes"]}
            assert line["bbox_map"] == expected and expected
            for key_frame in line["bbox_map"]:
                assert times[int(key_frame)] in [pytest.approx(t) for t in row["frame_timestamps"]]
    assert len(seen) == len(answers)


def test_a_cup_box_sits_on_the_frames_of_its_time_range(everything: Path) -> None:
    # The manifest held the cup's box over 0.5-3.5 s: exactly the sampled frames in that range carry it.
    for line in read_lines(everything)["rcap"]:
        if line["source"]["region_id"] != "cup":
            continue
        keys = sorted(int(k) for k in line["bbox_map"])
        assert all(0.5 - 1e-6 <= k / FPS < 3.5 for k in keys) and keys
        assert all(v == [40.0, 40.0, 200.0, 160.0] for v in line["bbox_map"].values())


def test_doubtful_answers_are_left_out_by_default(built_index: str, tmp_path: Path) -> None:
    report = export_index(ExportConfig(index=built_index, out=str(tmp_path)))
    answers = index_answers(built_index)
    doubtful = [a for a in answers if looks_doubtful(a)]
    assert doubtful, "the tiny model's noise should leave some answers unparsed"
    lines = read_lines(tmp_path)
    assert sum(len(v) for v in lines.values()) == len(answers) - len(doubtful)
    assert sum(report.left_out.values()) == len(doubtful)
    kept = {answer_key(t, line["source"], line["conversations"][0]["value"]) for t, v in lines.items() for line in v}
    assert not kept & {answer_key(a["task"], a, a["prompt"]) for a in doubtful}
    assert all(line["source"]["doubt"] is None for v in lines.values() for line in v)
    written = json.loads((tmp_path / "export.json").read_text())
    assert written["left_out_doubtful"] == dict(report.left_out) and written["written"] == dict(report.written)


def _a_clean_answer(built_index: str) -> tuple[dict[str, Any], list[int]]:
    row = next(r for r in read_current(built_index, "segments").to_pylist()
               if r["task"] == "caption")
    positions = [int(round(t * FPS)) for t in row["frame_timestamps"]]
    return row, positions


@pytest.mark.parametrize(("change", "reason"), [
    ({"parse_error": "no [start, end] found"}, "unparsed"),
    ({"clamped": True}, "clamped"),
    ({"benchmark_reading_ok": False}, "benchmark_reading_differs"),
    ({"correct": False}, "wrong_answer"),
    ({"raw_output": "  \n"}, "empty_answer"),
])
def test_each_doubt_reason(built_index: str, change: dict[str, Any], reason: str) -> None:
    row, positions = _a_clean_answer(built_index)
    assert doubt(Answer((row,)), positions, positions) is None
    assert doubt(Answer(({**row, **change},)), positions, positions) == reason
    if "raw_output" in change:
        return  # one answer's rows share their raw output
    # An RDCap answer is doubtful when any of its event rows is.
    assert doubt(Answer((row, {**row, **change})), positions, positions) == reason


def test_frames_the_trainer_would_not_see_are_doubtful(built_index: str) -> None:
    row, positions = _a_clean_answer(built_index)
    repeated = positions[:16] + positions[:16]
    assert doubt(Answer((row,)), repeated, repeated) == "short_clip"
    assert doubt(Answer((row,)), positions, [p + 1 for p in positions]) == "sampling_differs"


def test_loader_times_read_back_as_the_frame() -> None:
    for fps in (25.0, 29.97002997, 30.0, 23.976, 59.94):
        for position in range(0, 2000, 7):
            t = loader_time(position, fps)
            assert int(t * fps) == position, (fps, position, t)


def test_a_short_clip_is_sampled_once_per_frame_by_the_loader() -> None:
    # The rule the short_clip reason guards: perception_models takes each of 20 frames once.
    assert loader_positions(0.0, loader_time(19, 25.0), 25.0, 100, 32) == list(range(20))
    # ... while the index shows PLM 32 frames, repeating some: the line would teach other frame numbers.
    indexed = plm_loader_positions(0, 20, 25.0, 32)
    assert len(indexed) == 32 and sorted(set(indexed)) == list(range(20))


def test_filters_are_search_filters(built_index: str, tmp_path: Path) -> None:
    segments = read_current(built_index, "segments").to_pylist()

    def exported(filters: SearchFilters, name: str) -> list[dict[str, Any]]:
        out = tmp_path / name
        export_index(ExportConfig(index=built_index, out=str(out), filters=filters, keep_doubtful=True))
        return [line for v in read_lines(out).values() for line in v]

    only_fgqa = exported(SearchFilters(task="fgqa"), "task")
    assert {line["source"]["task"] for line in only_fgqa} == {"fgqa"}
    assert len(only_fgqa) == sum(r["task"] == "fgqa" for r in segments)
    garage = exported(SearchFilters(video="*garage*"), "video")
    assert garage and all("garage-plain" in line["video"] for line in garage)
    assert len(garage) == len([a for a in index_answers(built_index) if "garage" in a["uri"]])
    late = exported(SearchFilters(start_s=2.5), "time")
    assert late and all(line["source"]["clip_index"] == 1 for line in late)
    expected = {a["task"] for a in index_answers(built_index) if any(r["end_s"] > 2.5 for r in a["rows"])}
    assert {line["source"]["task"] for line in late} == expected


def test_cut_clips_stand_alone(built_index: str, source_videos: dict[str, str], tmp_path: Path) -> None:
    report = export_index(ExportConfig(index=built_index, out=str(tmp_path), cut_clips=True, keep_doubtful=True))
    assert not report.cut_errors
    # The keyed video's clips start on keyframes (copied); the plain one's second clip does not.
    assert report.cuts == Counter({"copy": 3, "encode": 1})
    source_times = {p: frame_times(p) for p in source_videos.values()}
    answers = {answer_key(a["task"], a, a["prompt"]): a for a in index_answers(built_index)}
    checked = set()
    for task, lines in read_lines(tmp_path).items():
        for line in lines:
            clip = tmp_path / line["video"]
            assert not Path(line["video"]).is_absolute() and clip.is_file()
            assert line["start_time"] == 0.0
            source = line["source"]["uri"]
            cut_times = frame_times(str(clip))
            # Same frame rate; the cut's frames are the source's from the clip's first frame.
            first = int(round(line["source"]["clip_start_s"] * FPS))
            assert cut_times == pytest.approx([t - source_times[source][first]
                                               for t in source_times[source][first:first + len(cut_times)]])
            with av.open(str(clip)) as container:
                duration = float(container.duration / av.time_base)
            assert duration == pytest.approx(len(cut_times) / FPS, abs=0.5 / FPS)
            if line["source"]["cut"] == "copy":
                # A copy runs from the keyframe to the next one (or the end): whole 2 s GOPs here.
                assert len(cut_times) in (50, 100)
            else:
                assert len(cut_times) == 50
            # The loader, run on the cut, takes the frames the model saw.
            picked = loader_positions(line["start_time"], line["end_time"], FPS, len(cut_times), 32)
            row = answers[answer_key(task, line["source"], line["conversations"][0]["value"])]
            assert [cut_times[p] + source_times[source][first] for p in picked] == pytest.approx(
                row["frame_timestamps"], abs=1e-6)
            if (source, first) not in checked:
                checked.add((source, first))
                ours = frames_at(str(clip), [0])[0]
                theirs = frames_at(source, [first])[first]
                tolerance = 0 if line["source"]["cut"] == "copy" else 6
                assert np.abs(ours - theirs).mean() <= tolerance
            if "bbox_map" in line:
                assert all(0 <= int(k) < len(cut_times) for k in line["bbox_map"])
    assert len(checked) == 4


def test_cli_export_and_its_errors(built_index: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["export", "--index", built_index, "--format", "plm-sft", "--out", str(out), "--task", "caption",
                 "--dataset", "kitchen"]) == 0
    said = capsys.readouterr().out
    assert "exported 4 conversations (caption 4)" in said
    assert "kitchen_caption:\n    annotation: " in (out / "datasets.yaml").read_text()
    # A narrower export into the same folder replaces the earlier one's task files.
    assert main(["export", "--index", built_index, "--out", str(out), "--task", "sgqa"]) == 0
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["sgqa.jsonl"]
    capsys.readouterr()
    for argv, words in [
        (["--out", "gs://bucket/out"], "is remote; give a local folder"),
        (["--out", str(out), "--task", "nope"], "unknown task(s) ['nope']"),
        (["--out", str(out), "--from", "5", "--to", "1"], "--to (1.0) must be after --from (5.0)"),
        (["--out", str(out / "sgqa.jsonl")], "is a file; give a folder"),
    ]:
        assert main(["export", "--index", built_index, *argv]) == 2
        assert words in capsys.readouterr().err
    assert main(["export", "--index", str(tmp_path / "nothing-here"), "--out", str(out)]) == 2
    assert "nothing-here" in capsys.readouterr().err
    with pytest.raises(ExportError, match="unknown export format 'csv'"):
        export_index(ExportConfig(index=built_index, out=str(out), format="csv"))


def test_a_remote_source_is_fetched_once_for_cutting(gcs_emulator, source_videos: dict[str, str],
                                                     tmp_path: Path) -> None:
    from core import storage
    from export.cuts import cut_clip, stream_frames
    from export.run import local_copy

    bucket = gcs_emulator.create_bucket("export")
    uri = f"gs://{bucket}/videos/kitchen-keyed.mp4"
    data = Path(source_videos["keyed"]).read_bytes()
    storage.write_bytes(uri, data)
    with local_copy(uri) as path:
        assert not storage.is_remote(path) and Path(path).read_bytes() == data
        cut = cut_clip(path, stream_frames(path), 50, 99, str(tmp_path / "clip.mp4"))
    assert not Path(path).exists(), "the download is removed once the clips are cut"
    assert cut.method == "copy" and len(frame_times(cut.path)) == 50


def test_a_file_whose_frames_moved_since_indexing_is_not_cut(built_index: str, source_videos: dict[str, str],
                                                             tmp_path: Path) -> None:
    # The indexed file replaced by a 30 fps encode of the same picture: frame 25 is no longer at 1.0 s.
    from core.media import make_video
    from export.plm_sft import frame_positions
    from export.run import ExportReport, _cut_lines, _Planned

    replaced = make_video(str(tmp_path / "replaced.mp4"), "testsrc=size=320x240:rate=30", 4)
    row = next(r for r in read_current(built_index, "segments").to_pylist() if r["task"] == "caption")
    answer = Answer(({**row, "uri": replaced},))
    report = ExportReport(out=str(tmp_path))
    planned = [_Planned(answer, frame_positions(row["frame_timestamps"], FPS), float(FPS), None)]
    assert list(_cut_lines(planned, str(tmp_path / "out"), report)) == []
    assert report.left_out == Counter({"sampling_differs": 1}) and not report.cuts
    # The same answer on the file it was indexed from is cut.
    kept = [_Planned(Answer((row,)), planned[0].positions, float(FPS), None)]
    assert len(list(_cut_lines(kept, str(tmp_path / "out"), report))) == 1 and sum(report.cuts.values()) == 1
