"""The GPU bench's ``--dry`` run, as the lent GPU machine would run it: no Beam, no PySceneDetect.

The device has no Beam (and no room to carry it), so everything the GPU bench drives must import
without it. This runs ``python -m bench --only gpu --dry`` with those imports refused, and checks
that the Beam-free build flow indexed the video with one decode process and with two.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HIDE_AND_RUN = """
import importlib.abc, runpy, sys

class Hidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('apache_beam', 'scenedetect'):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: the GPU machine has none)")
        return None

sys.meta_path.insert(0, Hidden())
sys.argv = ['python -m bench', *sys.argv[1:]]
runpy.run_module('bench', run_name='__main__', alter_sys=True)
"""


def test_the_gpu_bench_runs_dry_without_beam(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = subprocess.run([sys.executable, "-c", HIDE_AND_RUN, "--only", "gpu", "--dry", "--repeats", "1",
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=880)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((out / "report.json").read_text())["figures"]
    by_name = {figure["name"]: figure for figure in figures}
    failed = [f"{name}: {figure.get('note')}" for name, figure in by_name.items()
              if (figure.get("note") or "").startswith("not run: failed")]
    assert not failed, failed
    for decoders in ("1 decode process", "2 decode processes"):
        rate = by_name[f"build flow, {decoders}: video-hours per GPU-hour (30 s clips, caption + 4 questions)"]
        assert rate["value"]["median"] > 0
        busy = by_name[f"build flow, {decoders}: GPU busy fraction"]
        # One 30 s clip, a caption and four questions: five rows, none failed.
        assert "1 clips, 5 rows" in busy["note"] and "0 failed rows" in busy["note"], busy["note"]
    beam_build = next(figure for name, figure in by_name.items() if name.startswith("full Beam build"))
    assert "apache_beam not installed" in beam_build["note"]
