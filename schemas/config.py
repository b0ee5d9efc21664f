"""Frozen, validated configuration of a build run."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.manifest import Question

# 0.2.0: clips are sampled by PLM's loader rule (clips of 32 s or more get other frames) and
# segment rows carry benchmark_reading_ok, so a rerun redoes videos indexed by 0.1.0.
PIPELINE_VERSION = "0.2.0"



class ClipSpec(BaseModel):
    """How a video is cut into clips: fixed windows of ``window_s`` or content-based scenes."""

    model_config = ConfigDict(frozen=True)

    mode: Literal["fixed", "scenes"] = "fixed"
    window_s: float = Field(30.0, gt=0)
    min_clip_s: float = Field(2.0, ge=0)
    max_clip_s: float = Field(60.0, gt=0)
    scene_threshold: float = Field(27.0, gt=0)

    @classmethod
    def parse(cls, text: str, min_clip_s: float = 2.0, max_clip_s: float = 60.0) -> ClipSpec:
        """Parse ``fixed:N`` or ``scenes`` as given to ``--clips``."""
        text = text.strip()
        match = re.fullmatch(r"fixed:(\d+(?:\.\d+)?)", text)
        if match:
            return cls(mode="fixed", window_s=float(match.group(1)), min_clip_s=min_clip_s, max_clip_s=max_clip_s)
        if text == "scenes":
            return cls(mode="scenes", min_clip_s=min_clip_s, max_clip_s=max_clip_s)
        raise ValueError(f"--clips must be 'fixed:SECONDS' (e.g. fixed:30) or 'scenes', got {text!r}")


class DecodeConfig(BaseModel):
    """How clips are decoded and sampled."""

    model_config = ConfigDict(frozen=True)

    backend: Literal["pyav", "decord"] = "pyav"
    num_frames: int = Field(32, ge=1, le=256)
    frame_size: int = Field(448, ge=14)
    # "exact": torchvision bicubic resize of the full-resolution frame, equal to PLM's processor.
    # "decoder": resize inside FFmpeg's scaler while decoding: faster, slightly different pixels.
    resize: Literal["exact", "decoder"] = "exact"
    threads: int = Field(0, ge=0)  # 0: let the decoder choose
    timeout_s: float = Field(900.0, gt=0)
    max_decoded_frames: int = Field(2_000_000, gt=0)
    # "process": decode in a child process killed at the time limit (a hard limit even for a
    # hang in native code); "none": in the worker, with the limit checked between frames.
    isolation: Literal["process", "none"] = "process"
    # How many decoded clips the decode process may hold ready ahead of the one being used.
    # None: 1 where a CUDA device is visible (decoding overlaps the GPU's work), 0 on a CPU-only
    # worker, where decoding ahead only takes cores from the torch threads running the model.
    prefetch_clips: int | None = Field(None, ge=0, le=8)
    # Decode only what the sampled frames need: skip non-reference frames that are not sampled and
    # seek across whole GOPs between samples. The sampled frames' pixels are the same either way.
    sparse: bool = True


class ModelConfig(BaseModel):
    """Which PLM checkpoint to load and how to generate."""

    model_config = ConfigDict(frozen=True)

    model: str
    max_new_tokens: int = Field(256, ge=1)
    batch_size: int = Field(4, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: int = Field(0, ge=0)  # 0: all cores on CPU
    # End a row whose output repeats an n-gram loop (model_runner.stopping.RunawayGuard). On in
    # build; eval never uses it, so benchmark scores stay exact.
    runaway_guard: bool = True


class BuildConfig(BaseModel):
    """Everything one ``plm-index build`` run does."""

    model_config = ConfigDict(frozen=True)

    input: str
    output: str
    clips: ClipSpec = ClipSpec()
    decode: DecodeConfig = DecodeConfig()
    model: ModelConfig
    tasks: tuple[str, ...] = ("caption",)
    # Questions given on the command line, asked about every clip.
    questions: tuple[Question, ...] = ()
    # Text embedding model for search (a path or hub id); None: the packaged all-MiniLM-L6-v2.
    embedding_model: str | None = None

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: tuple[str, ...]) -> tuple[str, ...]:
        if not tasks:
            raise ValueError("at least one task is needed")
        return tasks

    def settings_hash(self) -> str:
        """A short hash of every setting that changes what lands in the index."""
        relevant = {
            "clips": self.clips.model_dump(),
            "decode": self.decode.model_dump(exclude={"threads", "timeout_s", "isolation", "sparse", "prefetch_clips"}),
            "model": self.model.model_dump(include={"model", "max_new_tokens", "runaway_guard"}),
            "embedding_model": self.embedding_model,
            "tasks": list(self.tasks),
            "questions": [q.model_dump(mode="json") for q in self.questions],
            "pipeline_version": PIPELINE_VERSION,
        }
        blob = json.dumps(relevant, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def generation_json(self) -> str:
        """Generation settings as stored with each segment row."""
        return json.dumps({"do_sample": False, "max_new_tokens": self.model.max_new_tokens,
                           "num_frames": self.decode.num_frames, "frame_size": self.decode.frame_size,
                           "resize": self.decode.resize, "decoder": self.decode.backend,
                           "runaway_guard": self.model.runaway_guard}, sort_keys=True)
