"""``plm-index serve``: the real CLI starts uvicorn on a small real index; the page, the JSON API,
range requests, the index-only video rule, gs:// streaming, and a real headless Chromium session."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.media import make_video
from search import SearchFilters, run_search
from tests.search.conftest import commit_video, segment_row
from tests.search.test_render import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"plm-index serve exited with {process.returncode}: {process.stdout.read()}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {START_TIMEOUT_S} s")


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a GET (error statuses returned, not raised)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, st_embed) -> Iterator[dict]:
    """A two-video index (events inside a 10 s clip) served by ``plm-index serve`` in its own process."""
    folder = tmp_path_factory.mktemp("serve")
    kitchen = make_video(str(folder / "videos" / "kitchen one.mp4"), "testsrc=size=320x240:rate=25", 10)
    garden = make_video(str(folder / "videos" / "garden.mp4"), "testsrc2=size=320x240:rate=25", 6)
    index = str(folder / "index")
    commit_video(index, [
        dict(segment_row("kitchen", 0, 0.0, 10.0, "A cook works in a kitchen.", events=[
            {"start_s": 1.0, "end_s": 3.5, "text": "someone washes lettuce in the sink"},
            {"start_s": 6.25, "end_s": 8.75, "text": "someone slices a tomato with a knife"}]), uri=kitchen)],
        embed=st_embed)
    commit_video(index, [dict(segment_row("garden", 0, 0.0, 6.0, "A dog digs a hole in the garden."), uri=garden)],
                 embed=st_embed)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", "--index", index, "--port", str(port)],
                               cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base + "/", process)
        yield {"base": base, "index": index, "kitchen": kitchen, "garden": garden}
    finally:
        process.terminate()
        process.wait(timeout=20)


def api(base: str, **params: str) -> tuple[int, dict]:
    status, headers, body = get(f"{base}/api/search?{urllib.parse.urlencode(params)}")
    if status == 200:
        assert float(headers["server-timing"].split("dur=")[1]) > 0
    return status, json.loads(body)


def test_api_answers_what_the_cli_answers(served: dict) -> None:
    status, data = api(served["base"], q="cutting a tomato", limit="3")
    assert status == 200
    cli = json.loads(run_search(served["index"], "cutting a tomato", 3, as_json=True))
    assert data["moments"] == cli
    best = data["moments"][0]
    assert (best["uri"], best["start_s"], best["end_s"]) == (served["kitchen"], 6.25, 8.75)
    # Filters: the task and the glob narrow, a time range outside the event excludes it.
    assert api(served["base"], q="cutting a tomato", task="rcap")[1]["moments"] == []
    assert {m["uri"] for m in api(served["base"], q="dog", video="*garden*")[1]["moments"]} == {served["garden"]}
    late = api(served["base"], q="cutting a tomato", **{"from": "9"})[1]["moments"]
    assert all(m["end_s"] > 9 for m in late)


def test_stats_name_the_opened_index(served: dict) -> None:
    status, _, body = get(served["base"] + "/api/stats")
    assert status == 200 and json.loads(body) == {"index": served["index"], "units": 3, "videos": 2,
                                                  "tasks": ["caption"]}


def test_bad_requests_are_named(served: dict) -> None:
    for params, named in [({"q": ""}, "empty"), ({"q": "tomato", "limit": "0"}, "limit"),
                          ({"q": "tomato", "mode": "fuzzy"}, "mode"), ({"q": "tomato", "from": "soon"}, "from"),
                          ({"q": "tomato", "from": "5", "to": "2"}, "--to")]:
        status, data = api(served["base"], **params)
        assert status == 400 and named in data["error"], params


def test_local_video_streams_with_ranges(served: dict) -> None:
    url = f"{served['base']}/video?{urllib.parse.urlencode({'uri': served['kitchen']})}"
    whole = Path(served["kitchen"]).read_bytes()
    status, headers, body = get(url)
    assert status == 200 and body == whole and headers["accept-ranges"] == "bytes"
    status, headers, body = get(url, {"Range": "bytes=100-1099"})
    assert status == 206 and body == whole[100:1100]
    assert headers["content-range"] == f"bytes 100-1099/{len(whole)}"


def test_only_the_index_videos_are_served(served: dict, tmp_path: Path) -> None:
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"not for you")
    kitchen = served["kitchen"]
    tricks = ["/etc/passwd", "file:///etc/passwd", str(outside),
              os.path.join(os.path.dirname(kitchen), "..", "videos", os.path.basename(kitchen)),
              os.path.dirname(kitchen) + "/../../../../../../etc/passwd", "file://" + kitchen, kitchen + "\x00",
              kitchen.upper(), "gs://bucket/anything.mp4", ""]
    for uri in tricks:
        for route in ("video", "thumbnail"):
            status, _, body = get(f"{served['base']}/{route}?{urllib.parse.urlencode({'uri': uri})}")
            assert status in (403, 404), (route, uri)
            assert b"root:" not in body and b"not for you" not in body
    for path in ("/video/../../etc/passwd", "/../etc/passwd", "/%2e%2e/etc/passwd", "/static/../etc/passwd"):
        status, _, body = get(served["base"] + path)
        assert status in (403, 404) and b"root:" not in body, path
    # A page fetched under a foreign Host name (DNS rebinding) is refused.
    assert get(served["base"] + "/", {"Host": "attacker.example"})[0] == 400


def test_thumbnail_and_page(served: dict) -> None:
    query = urllib.parse.urlencode({"uri": served["kitchen"], "t": "7.5"})
    status, headers, body = get(f"{served['base']}/thumbnail?{query}")
    assert status == 200 and headers["content-type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    status, _, page = get(f"{served['base']}/?{urllib.parse.urlencode({'q': 'tomato'})}")
    assert status == 200 and b'data-start="6.250"' in page and b"someone slices a tomato" in page
    status, _, page = get(f"{served['base']}/?{urllib.parse.urlencode({'q': 'tomato', 'limit': '-1'})}")
    assert status == 400 and b"limit" in page


def test_serve_imports_neither_beam_nor_torch() -> None:
    code = ("import sys, json; from pipeline.cli import light_parser; light_parser('serve'); import search.server; "
            "print(json.dumps({m: m in sys.modules for m in ('apache_beam', 'torch', 'transformers')}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {"apache_beam": False, "torch": False, "transformers": False}


def test_gs_videos_stream_through_the_server(tmp_path: Path, gcs_emulator, st_embed) -> None:
    import uvicorn

    from core import storage
    from search.server import create_app

    local = make_video(str(tmp_path / "v.mp4"), "testsrc=size=160x120:rate=25", 3)
    whole = Path(local).read_bytes()
    uri = f"gs://{gcs_emulator.create_bucket()}/videos/v.mp4"
    storage.write_bytes(uri, whole)
    index = str(tmp_path / "index")
    commit_video(index, [dict(segment_row("v", 0, 0.0, 3.0, "a test pattern moves"), uri=uri)], embed=st_embed)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(index), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base + "/")
        url = f"{base}/video?{urllib.parse.urlencode({'uri': uri})}"
        status, headers, body = get(url, {"Range": "bytes=10-2009"})
        assert status == 206 and body == whole[10:2010]
        assert headers["content-range"] == f"bytes 10-2009/{len(whole)}"
        assert get(url, {"Range": "bytes=-100"})[2] == whole[-100:]
        assert get(url, {"Range": f"bytes={len(whole)}-"})[0] == 416
        status, _, body = get(url)
        assert status == 200 and body == whole
        missing = f"{base}/video?{urllib.parse.urlencode({'uri': uri.replace('v.mp4', 'w.mp4')})}"
        assert get(missing)[0] == 404
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path: Path):
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("Chromium is not installed (apt-get install -y chromium chromium-driver); CI installs it")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, "--autoplay-policy=no-user-gesture-required", "--mute-audio"]:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_browser_types_a_query_clicks_a_card_and_plays_the_moment(served: dict, browser) -> None:
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(served["base"] + "/")
    box = browser.find_element("id", "q")
    box.send_keys("cutting a tomato", Keys.ENTER)
    WebDriverWait(browser, 20).until(lambda d: d.find_elements("css selector", ".card"))
    cards = browser.find_elements("css selector", ".card")
    first = cards[0]
    assert (first.get_attribute("data-start"), first.get_attribute("data-end")) == ("6.250", "8.750")
    assert "someone slices a tomato" in first.text
    WebDriverWait(browser, 20).until(lambda d: d.execute_script(
        "const i = document.querySelector('.card img'); return i.complete && i.naturalWidth > 0;"))
    first.click()
    state = browser.execute_script(
        "const v = document.getElementById('player');"
        "return new Promise(done => { const t0 = Date.now(); (function wait() {"
        " if ((v.readyState >= 1 && !v.seeking && v.currentTime > 0) || Date.now() - t0 > 10000)"
        "  done([v.currentTime, v.readyState, v.getAttribute('src'), v.error && v.error.code]);"
        " else setTimeout(wait, 20); })(); });")
    current, ready, src, error = state
    assert error is None and ready >= 1, state
    assert src == "/video?" + urllib.parse.urlencode({"uri": served["kitchen"]})
    assert 6.25 <= current < 6.25 + 1.0, state  # at the moment's start (it may have just begun playing)
    # The player stops at the moment's end.
    browser.execute_script("document.getElementById('player').currentTime = 8.7;")
    paused = browser.execute_script(
        "const v = document.getElementById('player');"
        "return new Promise(done => { const t0 = Date.now(); (function wait() {"
        " if (v.paused || Date.now() - t0 > 5000) done([v.paused, v.currentTime]); else setTimeout(wait, 50);"
        " })(); });")
    assert paused[0] and paused[1] < 9.5, paused


def test_a_running_server_picks_up_newly_committed_videos(tmp_path: Path, st_embed) -> None:
    from search.server import IndexApp

    first = make_video(str(tmp_path / "first.mp4"), "testsrc=size=160x120:rate=25", 2)
    later = make_video(str(tmp_path / "later.mp4"), "testsrc2=size=160x120:rate=25", 2)
    index = str(tmp_path / "index")
    commit_video(index, [dict(segment_row("first", 0, 0.0, 2.0, "a parrot sings on a branch"), uri=first)],
                 embed=st_embed)
    app = IndexApp(index)
    assert app.uris == {first}
    assert app.refresh() is False  # nothing new: the opened engine stays
    commit_video(index, [dict(segment_row("later", 0, 0.0, 2.0, "a horse jumps over a fence"), uri=later)],
                 embed=st_embed)
    assert later not in app.uris  # not served before the refresh
    assert app.refresh() is True
    assert app.uris == {first, later}
    hits = app.search("horse jumping a fence", "hybrid", 1, SearchFilters())
    assert hits[0].uri == later
