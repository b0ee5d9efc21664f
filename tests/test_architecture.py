"""The house rules of ``../shared/design/architecture.md``, checked on the source and in fresh processes.

- Data flows one way: each package imports only the floors below it (``ALLOWED``); in particular
  ``model_runner`` and ``transforms`` do not import each other, and nothing in the product
  imports ``bench``.
- The torchvision shim sits where torch meets transformers: every module that imports
  transformers, sentence-transformers or torchvision imports ``torchvision_shim`` first, and no
  package ``__init__`` and no light package imports it, so ``import schemas`` and a keyword search
  load no torch (checked in a subprocess, since this test process has torch loaded already).
- The build's flow (probe, plan, decode, prompts, ``PlmRunner``), ``eval`` and the GPU bench
  import without Beam, as the lent GPU machine runs them.
- Nothing sets ``HF_HUB_OFFLINE`` for the whole process.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Which project packages each package may import (the floors below it). Packages not listed
#: here (new ones) are held to the bench and shim rules only.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "schemas": {"core"},
    "tasks": {"core", "schemas"},
    "index": {"core", "schemas"},
    "model_runner": {"core", "schemas", "tasks"},
    "transforms": {"core", "schemas", "tasks", "index"},
    "search": {"core", "schemas", "tasks", "index"},
    "export": {"core", "schemas", "tasks", "index", "search"},
    "evaluation": {"core", "schemas", "tasks", "index", "model_runner", "transforms", "search"},
    "pipeline": {"core", "schemas", "tasks", "index", "model_runner", "transforms", "search", "evaluation", "export"},
}
#: Packages that must load without torch, transformers or Beam.
LIGHT = ("core", "schemas", "tasks", "index", "search", "export")
HEAVY_IMAGE_LIBS = ("transformers", "sentence_transformers", "torchvision")


def product_packages() -> list[str]:
    """Top-level packages of the product: folders with an ``__init__.py``, less tests and the bench."""
    return sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in ("tests", "bench"))


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every absolute import in a module, at any depth (functions included), as (line, module)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return sorted(found)


def modules_of(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_the_package_list_is_the_house() -> None:
    assert set(ALLOWED) <= set(product_packages()), product_packages()


def test_imports_run_down_the_house_only() -> None:
    packages = set(product_packages()) | {"bench"}
    wrong = []
    for package in product_packages():
        for path in modules_of(package):
            for line, module in imports_of(path):
                top = module.split(".")[0]
                if top == "bench":
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module} (the product never imports bench)")
                elif package in ALLOWED and top in packages and top != package and top not in ALLOWED[package]:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module} ({package} is below {top})")
    assert not wrong, "\n".join(wrong)


def test_the_torchvision_shim_is_imported_where_transformers_is() -> None:
    wrong = []
    for package in product_packages():
        for path in modules_of(package):
            found = imports_of(path)
            shim = [line for line, module in found if module == "torchvision_shim"]
            heavy = [line for line, module in found if module.split(".")[0] in HEAVY_IMAGE_LIBS]
            where = path.relative_to(ROOT)
            if heavy and (not shim or min(shim) > min(heavy)):
                wrong.append(f"{where}:{min(heavy)} imports transformers/torchvision without torchvision_shim first")
            if shim and (path.name == "__init__.py" or package in LIGHT):
                wrong.append(f"{where}:{min(shim)} imports torchvision_shim in a package that must stay light")
    assert not wrong, "\n".join(wrong)


def test_light_packages_and_a_keyword_search_load_no_torch_or_beam(tmp_path: Path) -> None:
    code = (
        "import sys, json\n"
        "import core, core.storage, core.media, core.sampling, core.text_embedding, schemas, schemas.tables\n"
        "import tasks, index, search, search.engine\n"
        "from search import run_search\n"
        "try:\n"
        "    run_search(sys.argv[1], 'pours water', 5, True, mode='keyword')\n"
        "except FileNotFoundError:\n"
        "    pass\n"
        "heavy = ('torch', 'torchvision', 'transformers', 'sentence_transformers', 'apache_beam', 'torchvision_shim')\n"
        "print(json.dumps({m: m in sys.modules for m in heavy}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "no-index")], capture_output=True,
                            text=True, timeout=300, cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert not any(loaded.values()), loaded


def test_the_flow_without_beam_imports_no_beam() -> None:
    """Probe, plan, decode, prompts and generation import without Beam: the GPU machine has none."""
    code = (
        "import sys, json\n"
        "import transforms.probe, transforms.probe.probing, transforms.plan, transforms.plan.planning\n"
        "import transforms.decode, transforms.decode.isolated, transforms.prompt, transforms.prompt.building\n"
        "import model_runner.runner, evaluation.job, bench.flow, bench.gpu\n"
        "print(json.dumps({m: m in sys.modules for m in ('apache_beam', 'scenedetect')}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert not any(loaded.values()), loaded


def test_nothing_sets_hf_hub_offline_for_the_process() -> None:
    wrong = []
    for package in product_packages():
        for path in modules_of(package):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and node.value == "HF_HUB_OFFLINE":
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not wrong, f"HF_HUB_OFFLINE named in product code (use local_files_only): {wrong}"


def test_loading_the_embedding_model_leaves_hf_hub_offline_alone(tmp_path: Path) -> None:
    code = (
        "import os, json\n"
        "from transforms.embed import load_embedding_model, embed_texts\n"
        "assert embed_texts(['a cat'], load_embedding_model()).shape == (1, 384)\n"
        "import huggingface_hub.constants as c\n"
        "print(json.dumps([os.environ.get('HF_HUB_OFFLINE'), c.HF_HUB_OFFLINE]))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [None, False]
