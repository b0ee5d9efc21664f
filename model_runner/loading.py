"""Load PerceptionLM and its processor from a local folder, a ``gs://`` folder or a hub id."""

from __future__ import annotations

import torchvision_shim  # noqa: F401  (first: torchvision and transformers need it, see torchvision_shim.py)

# isort: split

import fcntl
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoProcessor, PerceptionLMForConditionalGeneration

from core import storage

log = logging.getLogger(__name__)


def stage_model(uri: str, cache_root: str | None = None) -> str:
    """Copy a remote checkpoint folder to local disk once per machine and return the local path.

    Several worker processes may ask at once: a file lock lets one copy while the others wait,
    and a ``.complete`` flag marks a finished copy, so later calls return at once.
    """
    root = cache_root or os.environ.get("PLM_INDEX_MODEL_CACHE") or os.path.join(
        tempfile.gettempdir(), "plm-index-models")
    local = os.path.join(root, hashlib.sha256(uri.encode()).hexdigest()[:16])
    os.makedirs(root, exist_ok=True)
    with open(local + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(local, ".complete")):
            log.info("staging model %s to %s", uri, local)
            storage.download_tree(uri, local)
            open(os.path.join(local, ".complete"), "w").close()
    return local


def resolve_model(model: str) -> str:
    """A local folder, a staged copy of a remote folder, or the hub id unchanged."""
    if storage.is_remote(model):
        return stage_model(model)
    if os.path.isdir(model):
        return model
    if os.path.exists(model):
        raise ValueError(f"--model {model} is a file; give the checkpoint folder")
    if model.count("/") != 1 or model.startswith((".", "/")):
        raise FileNotFoundError(f"--model {model} is neither a folder nor a hub id like facebook/Perception-LM-1B")
    return model


def pick_device(requested: str = "auto") -> str:
    """``cuda`` when asked for or available (with ``auto``), else ``cpu``."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA device is available")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


@dataclass
class LoadedPlm:
    """A loaded model with its processor and the device it runs on."""

    model: Any
    processor: Any
    device: str
    model_id: str


def load_plm(model: str, device: str = "auto", torch_threads: int = 0) -> LoadedPlm:
    """Load PLM for inference: bf16 with SDPA on CUDA, fp32 on CPU; safetensors only, no remote code."""
    device = pick_device(device)
    path = resolve_model(model)
    if device == "cpu":
        threads = torch_threads or max(1, os.cpu_count() or 1)
        torch.set_num_threads(threads)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=False)
    processor.tokenizer.padding_side = "left"
    plm = PerceptionLMForConditionalGeneration.from_pretrained(
        path, dtype=dtype, attn_implementation="sdpa", use_safetensors=True, trust_remote_code=False)
    plm.to(device).eval()
    return LoadedPlm(model=plm, processor=processor, device=device, model_id=model)
