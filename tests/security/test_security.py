"""Security properties: safetensors only, no remote code, no shell strings, no credentials in logs."""

from __future__ import annotations

import ast
import json
import logging
import shutil
from pathlib import Path

import pytest

from model_runner.loading import load_plm
from model_runner.tiny import build_tiny_plm

ROOT = Path(__file__).resolve().parents[2]
PROJECT_DIRS = ("core", "pipeline", "transforms", "model_runner", "schemas", "bench", "infra")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(build_tiny_plm(str(tmp_path_factory.mktemp("sec") / "tiny")))


def test_a_checkpoint_without_safetensors_is_refused(tmp_path: Path, tiny_dir: Path) -> None:
    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_dir, pickled)
    # The same weights as a pickle (what older checkpoints ship): loading it could run arbitrary code.
    torch.save(load_file(str(pickled / "model.safetensors")), str(pickled / "pytorch_model.bin"))
    (pickled / "model.safetensors").unlink()
    assert list(pickled.glob("*.bin")), "the checkpoint now holds only pickled weights"
    with pytest.raises(OSError):
        load_plm(str(pickled), device="cpu", torch_threads=1)


def test_remote_code_in_a_checkpoint_is_never_run(tmp_path: Path, tiny_dir: Path) -> None:
    evil = tmp_path / "evil"
    shutil.copytree(tiny_dir, evil)
    marker = tmp_path / "remote-code-ran"
    (evil / "evil_processing.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((evil / "processor_config.json").read_text())
    config["auto_map"] = {"AutoProcessor": "evil_processing.EvilProcessor"}
    (evil / "processor_config.json").write_text(json.dumps(config))
    try:
        load_plm(str(evil), device="cpu", torch_threads=1)
    except Exception:  # noqa: BLE001 - refusing to load is as good as ignoring the code
        pass
    assert not marker.exists(), "code shipped with a checkpoint was executed"


def _python_files() -> list[Path]:
    return [p for d in PROJECT_DIRS for p in (ROOT / d).rglob("*.py")] + [ROOT / "torchvision_shim.py"]


def test_subprocesses_never_go_through_a_shell() -> None:
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
                offenders.append(f"{path}:{node.lineno} {name}")
            for keyword in node.keywords:
                if keyword.arg == "shell" and not (isinstance(keyword.value, ast.Constant) and not keyword.value.value):
                    offenders.append(f"{path}:{node.lineno} shell=...")
            if name.startswith("subprocess.") and node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr)):
                offenders.append(f"{path}:{node.lineno} command given as a string")
    assert len(_python_files()) > 20
    assert offenders == []


def test_credentials_are_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A real storage failure against an unreachable endpoint, with credentials set, logs no secret."""
    from core import storage

    secret = "s3cr3t-refresh-token-do-not-log"
    adc = tmp_path / "adc.json"
    adc.write_text(json.dumps({"type": "authorized_user", "client_id": "id", "client_secret": secret,
                               "refresh_token": secret}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setattr(storage, "POLICY", storage.POLICY.__class__(**{**storage.POLICY.__dict__,
                                                                       "max_attempts": 2, "max_wait_s": 0.1,
                                                                       "initial_wait_s": 0.01}))
    import gcsfs

    gcsfs.GCSFileSystem.clear_instance_cache()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Exception) as failure:  # noqa: B017 - any failure will do; the logs are the test
        storage.read_bytes("gs://bucket/video.mp4")
    text = caplog.text + str(failure.value) + repr(failure.value)
    assert caplog.records, "the failure was logged"
    assert secret not in text
    gcsfs.GCSFileSystem.clear_instance_cache()
