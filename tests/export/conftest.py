"""A small real index to export: real videos, a manifest with questions and regions, the tiny PLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.media import make_video
from model_runner.tiny import build_tiny_plm
from pipeline.build import run_build
from pipeline.options import beam_options
from schemas.config import BuildConfig, ClipSpec, ModelConfig

TASKS = ("caption", "fgqa", "sgqa", "rcap", "rtloc", "rdcap")
FPS = 25


@pytest.fixture(scope="session")
def built_index(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An index of two 4 s videos in 2 s clips, every task asked.

    ``kitchen-keyed.mp4`` has a keyframe every 2 s, so each clip starts on one (cut by stream copy);
    ``garage-plain.mp4`` has x264's default GOP, so its second clip does not (re-encoded).
    """
    root = tmp_path_factory.mktemp("export-index")
    keyed = make_video(str(root / "videos" / "kitchen-keyed.mp4"), f"testsrc=size=320x240:rate={FPS}", 4,
                       extra=["-g", "50", "-keyint_min", "50", "-sc_threshold", "0"])
    plain = make_video(str(root / "videos" / "garage-plain.mp4"), f"testsrc2=size=320x240:rate={FPS}", 4)
    regions = [{"region_id": "cup", "caption": "the cup is lifted", "box": [40, 40, 200, 160],
                "start_s": 0.5, "end_s": 3.5},
               {"region_id": "hand", "boxes_by_frame": {str(i): [10, 12, 100, 110] for i in range(0, 100, 3)}}]
    rows = [
        {"uri": keyed, "regions": regions,
         "questions": [{"question": "What does the person do?", "options": ["cut", "pour", "stir"], "answer": "B"},
                       {"question": "Where did I put the keys?"}]},
        {"uri": plain, "questions": [{"question": "Is it dark?", "options": ["yes", "no"]}]},
    ]
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = build_tiny_plm(str(root / "tiny-plm"))
    config = BuildConfig(input=str(manifest), output=str(root / "index"), clips=ClipSpec.parse("fixed:2"),
                         model=ModelConfig(model=model, max_new_tokens=12, torch_threads=2), tasks=TASKS)
    summary = run_build(config, beam_options([]))
    assert (summary.inputs, summary.indexed, summary.failed) == (2, 2, 0)
    return str(root / "index")


@pytest.fixture(scope="session")
def source_videos(built_index: str) -> dict[str, str]:
    """The two source videos by short name."""
    folder = Path(built_index).parent / "videos"
    return {"keyed": str(folder / "kitchen-keyed.mp4"), "plain": str(folder / "garage-plain.mp4")}
