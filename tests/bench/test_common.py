"""The bench's CPU meter counts the children a build leaves running (its decode process)."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.common import tree_cpu_seconds

BUSY_CHILD = """
import sys, time
end = time.process_time() + 0.5
while time.process_time() < end:
    pass
print("busy done", flush=True)
sys.stdin.read()
"""


def test_tree_cpu_counts_a_live_child_and_a_reaped_one() -> None:
    before_tree, before_own = tree_cpu_seconds(), time.process_time()
    child = subprocess.Popen([sys.executable, "-c", BUSY_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "busy done"
        live = tree_cpu_seconds() - before_tree  # the child still runs: read from /proc
        own = time.process_time() - before_own
    finally:
        child.communicate("")
    reaped = tree_cpu_seconds() - before_tree  # it ended and was reaped: RUSAGE_CHILDREN
    assert own < 0.3
    assert live >= 0.45
    assert reaped >= 0.45
