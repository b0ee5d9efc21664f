"""Child processes that die with their parent, however the parent ends (SIGTERM, SIGINT, SIGKILL).

A child started with ``multiprocessing``'s spawn method outlives a killed parent: nothing tells
it. ``run_child`` is the entry point of such a child. Before it imports anything heavy (the
decode child imports torch and PyAV, seconds of work during which a killed parent would otherwise
leave it running), it starts a watchdog thread that ends the process at once when

- the *lifeline* pipe reads end of file: only the parent holds its write end, and the kernel
  closes it however the parent ends, SIGKILL included;
- or the parent's pid is no longer the child's parent (it was re-parented).

On Linux it also asks the kernel for SIGKILL when the parent dies (``prctl(PR_SET_PDEATHSIG)``),
which works even while the child is stuck in native code, but only where that is safe: the kernel
ties the signal to the *thread* that started the child, so it is set only when the parent's main
thread started it (a worker thread that ends would otherwise kill a healthy child).

Standard library only, so that a spawned child reaches the watchdog within milliseconds.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import sys
import threading
from typing import Any

# How often the watchdog looks at its parent (a dead parent is usually seen at once, as end of file).
WATCHDOG_POLL_S = 0.5
# The exit status of a child that ended because its parent was gone.
ORPHAN_EXIT_STATUS = 70
_PR_SET_PDEATHSIG = 1


def ask_kernel_for_death_signal() -> bool:
    """Linux: have the kernel SIGKILL this process when the thread that started it exits. True if set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent_pid: int, lifeline: Any, kernel_signal: bool) -> None:
    """In a child: end this process at once when ``parent_pid`` ends (see the module's docstring).

    ``lifeline`` is the read end of a ``multiprocessing`` pipe whose write end only the parent holds.
    """
    if kernel_signal:
        ask_kernel_for_death_signal()
    if os.getppid() != parent_pid:  # the parent died before this process got here
        os._exit(ORPHAN_EXIT_STATUS)

    def watch() -> None:
        while True:
            try:
                gone = lifeline.poll(WATCHDOG_POLL_S)  # True at end of file: the parent is gone
            except (OSError, EOFError):
                gone = True
            if gone or os.getppid() != parent_pid:
                os._exit(ORPHAN_EXIT_STATUS)  # not sys.exit: the main thread may be stuck in native code

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def run_child(parent_pid: int, lifeline: Any, kernel_signal: bool, target: str, *args: Any) -> Any:
    """A spawned child's entry point: the watchdog first, then ``target`` (``"module:function"``) with ``args``."""
    die_with_parent(parent_pid, lifeline, kernel_signal)
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(*args)
