"""Resume: kill a real ``plm-index build`` with SIGKILL part way (twice), rerun it, count the work redone.

Figure: clips inferred over all attempts (two killed, one to completion) against the clips of one
uninterrupted run of the same build, measured in the same bench run. The allowance is the clips
of the videos in flight at each kill (inferred, not yet committed), which a kill may lose.

The driver (``attempt``) is shared with the test that asserts the same shape
(``tests/pipeline/test_resume.py``).
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from bench.common import Context, Figure, Stat, skipped, tiny_model_and_videos

INFERRED = re.compile(r"inferred (\w+) for clip (\d+) of (.+)$")
COMMITTED = re.compile(r"committed (.+?) \((indexed|failed),")


@dataclass
class Attempt:
    """What one ``plm-index build`` process did before it ended or was killed."""

    returncode: int | None
    killed: bool
    inferred: list[tuple[str, int]] = field(default_factory=list)  # (uri, clip) in the order they finished
    committed: list[str] = field(default_factory=list)
    stdout: str = ""
    stderr_tail: str = ""

    @property
    def in_flight_clips(self) -> int:
        """Clips inferred by this attempt for videos it had not committed when it ended."""
        done = set(self.committed)
        return sum(1 for uri, _ in self.inferred if uri not in done)


def build_command(folder: str, output: str, model: str, clips: str = "fixed:2") -> list[str]:
    """The ``plm-index build`` command the resume figure is measured on (verbose: it logs each clip)."""
    return [sys.executable, "-m", "pipeline.cli", "-v", "build", "--input", folder, "--output", output,
            "--clips", clips, "--max-new-tokens", "4", "--batch-size", "2", "--torch-threads", "2",
            "--model", model, "--no-progress"]


def attempt(command: list[str], kill_after_clips: int | None = None, timeout_s: float = 900.0) -> Attempt:
    """Run ``command``; with ``kill_after_clips``, SIGKILL its process group once that many clips are inferred."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                               text=True, bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    result = Attempt(returncode=None, killed=False)
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    tail: list[str] = []
    while time.monotonic() < deadline:
        if not selector.select(timeout=0.5):
            if process.poll() is not None:
                break
            continue
        line = process.stderr.readline()
        if not line:
            break
        tail = (tail + [line])[-40:]
        if found := INFERRED.search(line.rstrip()):
            result.inferred.append((found.group(3), int(found.group(2))))
        elif found := COMMITTED.search(line):
            result.committed.append(found.group(1))
        if kill_after_clips is not None and len(result.inferred) >= kill_after_clips:
            os.killpg(process.pid, signal.SIGKILL)
            result.killed = True
            break
    if process.poll() is None and not result.killed:
        os.killpg(process.pid, signal.SIGKILL)
    result.stdout = process.stdout.read() if not result.killed else ""
    result.returncode = process.wait(timeout=60)
    result.stderr_tail = "".join(tail)
    return result


def run(ctx: Context) -> list[Figure]:
    """Clean run vs killed at 50 % and 90 % then resumed, over 6 videos of 3 clips each (2 with ``--quick``)."""
    count = 2 if ctx.quick else 6
    found = tiny_model_and_videos(ctx, "resume-videos", count, 6)
    if isinstance(found, str):
        return [skipped("resume", "resume", found)]
    model, paths = found
    folder = os.path.dirname(paths[0])
    work = os.path.join(ctx.out_dir, "resume")
    clean = attempt(build_command(folder, os.path.join(work, f"clean-{time.time_ns()}"), model))
    total = len(clean.inferred)
    killed_index = os.path.join(work, f"killed-{time.time_ns()}")
    command = build_command(folder, killed_index, model)
    first = attempt(command, kill_after_clips=max(1, total // 2))
    second = attempt(command, kill_after_clips=max(1, int(0.9 * (total - len(first.inferred)))))
    last = attempt(command)
    attempts = [first, second, last]
    inferred = sum(len(a.inferred) for a in attempts)
    allowance = first.in_flight_clips + second.in_flight_clips
    return [Figure(
        benchmark="resume", name=f"clips inferred over 3 attempts (SIGKILL at ~50 % and ~90 %, then rerun), {count} "
        "videos", unit="clips", value=Stat.of([float(inferred)]), baseline_name="one uninterrupted run",
        baseline=Stat.of([float(total)]), ratio=Stat.of([inferred / total]) if total else None,
        target=f"<= 1.05x + clips in flight at the kills ({allowance})", met=inferred <= 1.05 * total + allowance,
        note=f"attempts inferred {[len(a.inferred) for a in attempts]}; final run: {last.stdout.strip()}",
        extra={"in_flight_clips": allowance, "attempt_clips": [len(a.inferred) for a in attempts]})]
