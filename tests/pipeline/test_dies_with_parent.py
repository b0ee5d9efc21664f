"""A killed build leaves no process behind: its decode child (and multiprocessing's helper) die with it.

A real ``plm-index build`` runs in a subprocess; as soon as its decode child exists (still
importing its libraries: the hardest moment, before any decode loop runs) the build alone is sent
SIGTERM, SIGINT or SIGKILL, and every process it had started must be gone within seconds.
Processes are read from /proc (psutil is not a dependency).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.media import make_video

START_WAIT_S = 240.0
GONE_WITHIN_S = 15.0


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live (not zombie) process."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z":
            found[int(entry)] = int(fields[1])
    return found


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``."""
    parents = _parents()
    below, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - below
        below |= frontier
    return below


def alive(pids: set[int]) -> set[int]:
    """Which of ``pids`` are still running (zombies are dead)."""
    return pids & set(_parents())


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture(scope="module")
def long_video_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("long")
    make_video(str(folder / "long.mp4"), "testsrc=size=160x120:rate=10", 60)
    return folder


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads processes from /proc (Linux)")
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_a_killed_build_leaves_no_process_behind(tmp_path: Path, long_video_folder: Path, tiny_model: str,
                                                 how: signal.Signals) -> None:
    build = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "build", "--input", str(long_video_folder),
         "--output", str(tmp_path / "index"), "--model", tiny_model, "--clips", "fixed:2",
         "--max-new-tokens", "4", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + START_WAIT_S
        children: set[int] = set()
        while time.monotonic() < deadline and build.poll() is None:
            children = descendants(build.pid)
            if any("spawn_main" in cmdline(pid) for pid in children):
                break
            time.sleep(0.1)
        assert build.poll() is None, f"the build ended before its decode child started:\n{build.stdout.read()}"
        assert any("spawn_main" in cmdline(pid) for pid in children), "no decode child appeared"
        children |= descendants(build.pid)
        build.send_signal(how)
        build.wait(timeout=60)
        deadline = time.monotonic() + GONE_WITHIN_S
        while alive(children) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = {pid: cmdline(pid) for pid in alive(children)}
        assert not survivors, f"still running {GONE_WITHIN_S:g} s after {how.name}: {survivors}"
        output = build.stdout.read().decode(errors="replace")
        assert "Traceback" not in output, output
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
