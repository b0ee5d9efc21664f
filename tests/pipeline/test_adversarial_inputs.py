"""Adversarial input, tried as a user would: real ``plm-index build`` and ``search`` in subprocesses.

Odd file names (bytes that are not UTF-8), an input folder whose name holds ``[``, symlinked folders
and a symlink loop, queries that are not UTF-8, non-finite score floors, an ``--output`` that is a
file, an empty glob, a full disk and manifests with a BOM. No case may print a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.media import make_video
from core.paths import local_path, uri_of_local_path
from transforms.discover import load_manifest

ROOT = Path(__file__).resolve().parents[2]
ODD_NAME = b"odd \x80\xfe name.mp4"  # not UTF-8: a lone continuation byte and an invalid lead byte


def plm_index(*args: str | bytes, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``plm-index ARGS`` from the source tree, its output as text (bad bytes replaced)."""
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, capture_output=True,
                            timeout=timeout)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(errors="replace"),
                                       result.stderr.decode(errors="replace"))


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``in [1]/``: a good video, one whose name is not UTF-8, a symlinked folder and a symlink loop."""
    base = tmp_path_factory.mktemp("adversarial")
    folder = base / "in [1]"
    make_video(str(folder / "ok.mp4"), "testsrc=size=160x120:rate=10", 3)
    make_video(str(base / "odd-source.mp4"), "mandelbrot=size=160x120:rate=10", 3)
    os.rename(base / "odd-source.mp4", os.fsencode(folder) + b"/" + ODD_NAME)
    make_video(str(base / "elsewhere" / "far.mkv"), "color=c=blue:size=160x120:rate=10", 3)
    (folder / "linked").symlink_to(base / "elsewhere")
    (folder / "loop").symlink_to(folder)
    return folder


@pytest.fixture(scope="module")
def built(archive: Path, tmp_path_factory: pytest.TempPathFactory, tiny_model: str) -> tuple[
        subprocess.CompletedProcess[str], str]:
    index = str(tmp_path_factory.mktemp("adversarial-index") / "index")
    result = plm_index("build", "--input", str(archive), "--output", index, "--model", tiny_model,
                       "--clips", "fixed:2", "--max-new-tokens", "6", "--no-progress")
    return result, index


def current_uris(index: str, table: str) -> set[str]:
    from index import read_current

    return set(read_current(index, table).column("uri").to_pylist())


def test_every_name_survives_and_the_good_videos_beside_it_are_indexed(archive: Path, built) -> None:
    result, index = built
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    # "in [1]" exists, so it is the folder itself, not a glob; the loop is listed once.
    assert "inputs 3, indexed 3, failed 0" in result.stdout, result.stdout
    odd_uri = uri_of_local_path(os.fsdecode(os.fsencode(archive) + b"/" + ODD_NAME))
    assert odd_uri.startswith("file://") and "%80%FE" in odd_uri
    assert current_uris(index, "videos") == {str(archive / "ok.mp4"), odd_uri, str(archive / "linked" / "far.mkv")}
    assert current_uris(index, "errors") == set()
    assert os.fsencode(local_path(odd_uri)) == os.fsencode(archive) + b"/" + ODD_NAME


def test_search_finds_the_odd_name_by_its_name_and_plays_it(archive: Path, built) -> None:
    from index import read_current
    from search.query import tokenize
    from search.render import thumbnail_jpeg

    _, index = built
    odd_uri = uri_of_local_path(os.fsdecode(os.fsencode(archive) + b"/" + ODD_NAME))
    texts = [r["text"] for r in read_current(index, "segments").to_pylist() if r["uri"] == odd_uri]
    word = next(w for text in texts for w in tokenize(text) if w.isalpha())
    result = plm_index("search", "--index", index, "--mode", "keyword", "--video", "*odd*", "--json", word)
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert {m["uri"] for m in json.loads(result.stdout)} == {odd_uri}
    assert thumbnail_jpeg(odd_uri, 1.0)[:2] == b"\xff\xd8"  # the page and the server open it back


@pytest.mark.parametrize("mode", ["hybrid", "semantic", "keyword"])
@pytest.mark.parametrize("query", [b"pours \xff\xfe water", b"\xc3(", b"slices \xed\xa0\x80 a tomato"])
def test_a_query_that_is_not_utf8_is_searched_without_a_traceback(built, mode: str, query: bytes) -> None:
    _, index = built
    result = plm_index("search", "--index", index, "--mode", mode, query)
    no_traceback(result)
    # A query whose words all vanish ("\xc3(") is refused cleanly (2); the others are searched (0).
    assert result.returncode == (2 if query == b"\xc3(" else 0), result.stderr
    if result.returncode == 2:
        assert "no searchable words" in result.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_a_non_finite_min_score_is_refused(built, value: str) -> None:
    _, index = built
    result = plm_index("search", "--index", index, f"--min-score={value}", "water")
    no_traceback(result)
    assert result.returncode == 2
    assert "--min-score must be a finite number" in result.stderr


@pytest.mark.parametrize("below", ["", "/sub/index"])
def test_an_output_that_is_a_file_is_named(tmp_path: Path, archive: Path, tiny_model: str, below: str) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    output = str(in_the_way) + below
    result = plm_index("build", "--input", str(archive / "ok.mp4"), "--output", output, "--model", tiny_model)
    no_traceback(result)
    assert result.returncode == 2
    assert f"plm-index build: --output {output} " in result.stderr and str(in_the_way) in result.stderr


def test_zero_inputs_is_an_error_unless_allowed(tmp_path: Path, archive: Path, tiny_model: str) -> None:
    glob = str(archive / "*.nothing-matches")
    common = ["--model", tiny_model, "--no-progress"]
    refused = plm_index("build", "--input", glob, "--output", str(tmp_path / "a"), *common)
    no_traceback(refused)
    assert refused.returncode == 2
    assert f"plm-index build: no input found in {glob}" in refused.stderr and "--allow-empty" in refused.stderr
    allowed = plm_index("build", "--input", glob, "--output", str(tmp_path / "b"), *common, "--allow-empty")
    no_traceback(allowed)
    assert allowed.returncode == 0 and "inputs 0" in allowed.stdout


def _can_mount_a_tiny_tmpfs(mount_point: Path) -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = subprocess.run([unshare, "--user", "--map-root-user", "--mount", "sh", "-c",
                            f"mount -t tmpfs -o size=16k tmpfs '{mount_point}'"], capture_output=True)
    return probe.returncode == 0


def test_a_full_disk_ends_in_one_line_naming_the_index(tmp_path: Path, archive: Path, tiny_model: str) -> None:
    # A real full disk: a 12 KiB tmpfs, mounted in a private mount namespace (no root needed).
    disk = tmp_path / "tiny-disk"
    disk.mkdir()
    if not _can_mount_a_tiny_tmpfs(disk):
        pytest.skip("cannot mount a tmpfs in a user namespace here (unshare --user --mount)")
    index = disk / "index"
    script = (f"mount -t tmpfs -o size=12k tmpfs '{disk}' && exec '{sys.executable}' -m pipeline.cli build "
              f"--input '{archive / 'ok.mp4'}' --output '{index}' --model '{tiny_model}' --clips fixed:2 "
              "--max-new-tokens 4 --no-progress")
    result = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], cwd=ROOT,
                            capture_output=True, text=True, errors="replace", timeout=600)
    no_traceback(result)
    assert result.returncode == 1, result.stderr
    assert f"plm-index build: cannot write {index}" in result.stderr
    assert "No space left on device" in result.stderr


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_manifest_with_a_bom_is_read(tmp_path: Path, archive: Path, suffix: str) -> None:
    manifest = tmp_path / f"m{suffix}"
    body = ("uri,collection\nok.mp4,x\n" if suffix == ".csv" else '{"uri": "ok.mp4", "collection": "x"}\n')
    manifest.write_bytes(b"\xef\xbb\xbf" + body.replace("ok.mp4", str(archive / "ok.mp4")).encode())
    (video,) = load_manifest(str(manifest))
    assert video.uri == str(archive / "ok.mp4") and json.loads(video.extras_json)["collection"] == "x"

