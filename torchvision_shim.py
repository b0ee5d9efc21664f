"""Make PyPI's CUDA-built torchvision importable beside the CPU torch wheel.

PyPI's torchvision for torch 2.13 is a CUDA build. With the CPU torch its ``_C`` extension
cannot load, and ``import torchvision`` then fails on the unguarded ``torchvision::nms`` and
``qnms`` meta registrations; every transformers import that reaches its image utilities fails
with it. Declaring those two op schemas first lets the pure-Python parts of torchvision (the
v2 transforms transformers uses) import. Nothing is done where ``_C`` loads.

It is imported only where torch meets transformers' image code (the frame decoder, model
loading, the embedding loader), first in each such module, so the shim is in place in each
process (the CLI, tests and Beam workers alike) before transformers is imported there, and light
imports (``import schemas``, a keyword search) never load torch (``tests/test_architecture.py``).
"""

from __future__ import annotations

import importlib.util
import os

_LIBRARY = None  # the torch.library.Library must stay alive for the ops to stay declared


def install() -> bool:
    """Declare the two op schemas if torchvision's ``_C`` cannot load. Returns True if it did."""
    global _LIBRARY
    if _LIBRARY is not None:
        return True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    import torch

    folder = spec.submodule_search_locations[0]
    compiled = [f for f in os.listdir(folder) if f.startswith("_C.") and f.endswith(".so")]
    if compiled:
        try:
            torch.ops.load_library(os.path.join(folder, compiled[0]))
            return False
        except OSError:
            pass
    try:
        library = torch.library.Library("torchvision", "DEF")
        library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    except RuntimeError:  # already declared in this process by someone else
        return False
    _LIBRARY = library
    return True


install()
