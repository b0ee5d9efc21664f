"""Decoding in a child process that is killed when a video's hard time limit passes.

A pathological file can hang a decoder inside native code (decord's ``get_batch`` is known
to), where no Python-level check runs. Each decode stage instance therefore keeps one spawned
decode process, sends it one video at a time, and receives the clips back one by one. If the
time limit passes, the process is killed (and started again for the next video), so a worker is
never stuck. The process is started once per stage instance, not per video.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import time
from collections.abc import Iterator
from typing import Any

from schemas.config import DecodeConfig
from schemas.records import ClipFrames, VideoClips
from transforms.decode.base import DecodeError, DecodeTimeout

log = logging.getLogger(__name__)

_CLIP, _DONE, _ERROR = "clip", "done", "error"
POLL_S = 2.0


def _serve(requests: Any, results: Any) -> None:
    """Child process: decode each requested video and stream its clips back."""
    import torchvision_shim  # noqa: F401
    from transforms.decode.base import decoder_for

    while True:
        request = requests.get()
        if request is None:
            return
        video, config = request
        try:
            for clip in decoder_for(config).decode(video, config):
                results.put((_CLIP, clip, None))
            results.put((_DONE, None, None))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
            results.put((_ERROR, type(exc).__name__, str(exc)))


class IsolatedDecoder:
    """Runs a backend in a killable child process, with the same ``decode`` interface."""

    def __init__(self) -> None:
        self._context = mp.get_context("spawn")
        self._process: Any = None
        self._requests: Any = None
        self._results: Any = None

    def _start(self) -> None:
        self._requests = self._context.Queue()
        self._results = self._context.Queue(maxsize=2)  # at most two clips in flight: bounded memory
        self._process = self._context.Process(target=_serve, args=(self._requests, self._results), daemon=True,
                                              name="plm-index-decoder")
        self._process.start()

    def close(self) -> None:
        """Stop the child process."""
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(timeout=5)
            self._process = None

    def decode(self, video: VideoClips, config: DecodeConfig) -> Iterator[ClipFrames]:
        """Decode in the child; past ``config.timeout_s`` the child is killed and DecodeTimeout raised."""
        if self._process is None or not self._process.is_alive():
            self._start()
        deadline = time.monotonic() + config.timeout_s
        self._requests.put((video, config))
        finished = False
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DecodeTimeout(f"decoding took longer than the {config.timeout_s:g} s limit; "
                                        "the decode process was killed")
                try:
                    kind, payload, message = self._results.get(timeout=min(remaining, POLL_S))
                except queue.Empty:
                    if not self._process.is_alive():
                        raise DecodeError(
                            f"the decode process died (exit code {self._process.exitcode})") from None
                    continue
                if kind == _CLIP:
                    yield payload
                elif kind == _DONE:
                    finished = True
                    return
                else:
                    finished = True
                    error = DecodeTimeout if payload == "DecodeTimeout" else DecodeError
                    raise error(f"{payload}: {message}")
        finally:
            if not finished:
                # Killed, timed out, or abandoned mid-video: the child's state is unknown; start afresh.
                self.close()
