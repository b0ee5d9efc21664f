"""Overnight safety: bad inputs, incremental reruns, --force, and a killed run started again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from core.media import make_video
from index import list_runs, read_current
from pipeline.build import run_build
from pipeline.options import beam_options
from schemas.config import BuildConfig, ClipSpec, ModelConfig
from schemas.tables import RUN_SPECIFIC_COLUMNS


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Every kind of awkward input, mixed with good videos. Returns the folder and the expected fate."""
    folder = tmp_path_factory.mktemp("archive")
    good = make_video(str(folder / "good.mp4"), "testsrc=size=320x240:rate=25", 3)
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "random.mp4").write_bytes(os.urandom(50_000))
    faststart = folder / "faststart.tmp"
    make_video(str(faststart), "testsrc=size=320x240:rate=25", 4, extra=["-movflags", "+faststart", "-f", "mp4"])
    data = faststart.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    faststart.unlink()
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac", str(folder / "audio_only.mp4"))
    make_video(str(folder / "moov_at_end.mp4"), "mandelbrot=size=256x144:rate=25", 2)  # FFmpeg's default layout
    ffmpeg("-i", good, "-c", "copy", "-metadata:s:v:0", "rotate=90", str(folder / "rotated.mp4"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=30", "-t", "3", "-vf",
           "select='lt(t,1)+gte(t,1)*not(mod(n,3))'", "-fps_mode", "vfr", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(folder / "vfr.mp4"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-frames:v", "1", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(folder / "one_frame.mp4"))
    make_video(str(folder / "long.mp4"), "color=c=gray:size=32x32:rate=1", 3600)
    ffmpeg("-f", "lavfi", "-i", "color=c=blue:s=16x16:r=10,scale=1:1", "-t", "1", "-c:v", "libx264",
           "-pix_fmt", "yuv444p", str(folder / "one_pixel.mp4"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=7680x4320:rate=5", "-t", "0.4", "-c:v", "libx264", "-preset",
           "ultrafast", "-pix_fmt", "yuv420p", str(folder / "8k.mp4"))
    (folder / "notes.txt").write_text("not a video")
    fate = {"good.mp4": "indexed", "zero.mp4": "probe", "random.mp4": "probe", "truncated.mp4": "either",
            "audio_only.mp4": "probe", "moov_at_end.mp4": "indexed", "rotated.mp4": "indexed",
            "vfr.mp4": "indexed", "one_frame.mp4": "indexed", "long.mp4": "indexed", "one_pixel.mp4": "indexed",
            "8k.mp4": "indexed"}
    return folder, fate


def config_for(source: str, output: str, model: str, window: str = "fixed:1800") -> BuildConfig:
    return BuildConfig(input=source, output=output, clips=ClipSpec.parse(window),
                       model=ModelConfig(model=model, max_new_tokens=4, batch_size=4, torch_threads=2))


def comparable(table) -> list[dict]:
    rows = table.drop_columns(list(RUN_SPECIFIC_COLUMNS)).to_pylist()
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def test_bad_inputs_each_end_up_in_exactly_one_place(tmp_path: Path, bad_inputs, tiny_model: str) -> None:
    folder, fate = bad_inputs
    output = str(tmp_path / "index")
    summary = run_build(config_for(str(folder), output, tiny_model), beam_options([]))
    print("\n" + summary.line())
    videos = {Path(r["uri"]).name: r for r in read_current(output, "videos").to_pylist()}
    errors = {}
    for row in read_current(output, "errors").to_pylist():
        errors.setdefault(Path(row["uri"]).name, []).append(row)
    segments = read_current(output, "segments").to_pylist()
    for name, expected in fate.items():
        assert (name in videos) != (name in errors), f"{name} must be indexed or failed, not both or neither"
        if expected == "indexed":
            assert name in videos, errors.get(name)
            assert any(Path(s["uri"]).name == name for s in segments)
        elif expected != "either":
            assert name in errors and {e["stage"] for e in errors[name]} == {expected}
    for rows in errors.values():
        assert all(r["message"] and r["error_class"] and r["attempts"] >= 1 for r in rows), rows
    assert "empty" in errors["zero.mp4"][0]["message"]
    assert "no video stream" in errors["audio_only.mp4"][0]["message"]
    assert (videos["rotated.mp4"]["width"], videos["rotated.mp4"]["height"]) == (240, 320)
    assert (videos["one_pixel.mp4"]["width"], videos["8k.mp4"]["width"]) == (1, 7680)
    assert videos["long.mp4"]["num_clips"] == 2 and videos["long.mp4"]["duration_s"] == pytest.approx(3600)
    vfr = next(s for s in segments if s["uri"].endswith("vfr.mp4"))
    gaps = {round(b - a, 3) for a, b in zip(vfr["frame_timestamps"], vfr["frame_timestamps"][1:], strict=False)}
    assert len(gaps) > 1, "VFR frames are sampled by their real timestamps"
    one = next(s for s in segments if s["uri"].endswith("one_frame.mp4"))
    assert one["frame_timestamps"] == [0.0] * 32
    assert summary.inputs == len(fate) and summary.ignored == 1
    assert summary.indexed + summary.failed == summary.inputs and summary.skipped == 0
    assert summary.indexed == len(videos) and summary.failed == len(errors)


def test_rerun_skips_finished_videos_and_force_redoes_them(tmp_path: Path, video_folder: Path,
                                                           tiny_model: str) -> None:
    first = tmp_path / "first"
    first.mkdir()
    shutil.copy(video_folder / "a.mp4", first / "a.mp4")
    output = str(tmp_path / "index")
    one = run_build(config_for(str(first), output, tiny_model, "fixed:4"), beam_options([]))
    assert (one.inputs, one.indexed, one.skipped) == (1, 1, 0)
    # The same content moved and renamed, beside a new video: only the new one is processed.
    shutil.move(first / "a.mp4", first / "renamed.mp4")
    shutil.copy(video_folder / "sub" / "b.mkv", first / "b.mkv")
    two = run_build(config_for(str(first), output, tiny_model, "fixed:4"), beam_options([]))
    assert (two.inputs, two.indexed, two.failed, two.skipped) == (2, 1, 0, 1)
    keys = [(r["video_id"], r["clip_index"], r["task"]) for r in read_current(output, "segments").to_pylist()]
    assert len(keys) == len(set(keys)) == 3 + 2
    forced = run_build(config_for(str(first), output, tiny_model, "fixed:4"), beam_options([]), force=True)
    assert (forced.indexed, forced.skipped) == (2, 0)
    keys = [(r["video_id"], r["clip_index"], r["task"]) for r in read_current(output, "segments").to_pylist()]
    assert len(keys) == len(set(keys)) == 5, "a forced rerun replaces rows, never duplicates them"
    assert [r.status for r in list_runs(output)] == ["finished"] * 3
