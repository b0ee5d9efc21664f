"""The HTML results page, opened in real headless Chromium (Debian's chromium + chromium-driver)."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pytest

from core.media import make_video
from search import Moment, SearchHit, run_search
from search.render import browser_url, clock, render_html, thumbnail_jpeg
from tests.search.conftest import commit_video, segment_row

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,2000"]


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_video(str(tmp_path_factory.mktemp("html") / "clip one.mp4"), "testsrc=size=320x240:rate=25", 4)


@pytest.fixture
def browser(tmp_path: Path):
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("Chromium is not installed (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def moment(uri: str, clip: int, start: float, end: float, score: float, text: str) -> Moment:
    hit = SearchHit(uri=uri, video_id="v", clip_index=clip, start_s=start, end_s=end, score=score, task="caption",
                    text=text)
    return Moment(uri=uri, video_id="v", task="caption", start_s=start, end_s=end, score=score, text=text,
                  hits=(hit,))


def test_thumbnail_is_the_frame_at_the_midpoint(video: str) -> None:
    from PIL import Image

    early, late = thumbnail_jpeg(video, 0.5), thumbnail_jpeg(video, 3.0)
    with Image.open(io.BytesIO(early)) as image:
        assert image.format == "JPEG" and image.size == (320, 240)
    assert early != late  # testsrc draws a moving pattern and a counter


def test_page_renders_cards_thumbnails_and_times(video: str, tmp_path: Path, browser) -> None:
    moments = [moment(video, 0, 0.0, 1.5, 0.81, "A <b>bold</b> person pours water & juice."),
               moment(video, 2, 2.25, 4.0, 0.52, "Someone slices \"bread\"."),
               moment(str(tmp_path / "missing.mp4"), 0, 10.0, 12.0, 0.3, "A missing video.")]
    page = tmp_path / "out.html"
    page.write_text(render_html(moments, "pours <water>", "hybrid", 99), encoding="utf-8")
    browser.get(page.as_uri())
    cards = browser.find_elements("css selector", ".card")
    assert len(cards) == 3
    widths = browser.execute_script(
        "return Array.from(document.querySelectorAll('.card')).map(c => {"
        " const i = c.querySelector('img'); return i && i.complete ? i.naturalWidth : 0; });")
    assert widths[:2] == [320, 320] and widths[2] == 0
    assert "no thumbnail" in cards[2].text
    for card, m in zip(cards, moments, strict=True):
        assert card.find_element("css selector", ".start").text == f"{m.start_s:.2f}"
        assert card.find_element("css selector", ".end").text == f"{m.end_s:.2f}"
        times = card.find_element("css selector", ".times").text
        assert times.startswith(f"{clock(m.start_s)}–{clock(m.end_s)}")
        assert card.find_element("css selector", ".uri").text == m.uri
        assert card.find_element("css selector", ".text").text == m.text  # escaped, shown verbatim
    assert browser.find_element("css selector", "h1").text == "pours <water>"
    # Clicking a card swaps the thumbnail for a video that starts at the moment's start.
    cards[1].click()
    src = browser.execute_script("return document.querySelectorAll('.card')[1].querySelector('video').src;")
    assert src == f"{browser_url(video)}#t=2.250,4.000"
    current = browser.execute_script(
        "const v = document.querySelectorAll('.card')[1].querySelector('video');"
        "return new Promise(done => { const t0 = Date.now(); (function wait() {"
        " if (v.readyState >= 1 || Date.now() - t0 > 5000) done(v.currentTime); else setTimeout(wait, 50); })(); });")
    assert current == pytest.approx(2.25, abs=0.1)


def test_run_search_writes_the_page_for_real_hits(video: str, tmp_path: Path, browser, st_embed) -> None:
    rows = [dict(segment_row("x", i, s, e, t), uri=video) for i, (s, e, t) in enumerate([
        (0.0, 1.0, "A man pours water into a glass."), (1.0, 2.0, "He keeps pouring water."),
        (3.0, 4.0, "A cat sleeps on a sofa.")])]
    index = str(tmp_path / "index")
    commit_video(index, rows, embed=st_embed)
    page = tmp_path / "results.html"
    out = run_search(index, "pouring water", 5, False, html_out=str(page), min_score=0.3)
    assert "0.00-2.00" in out
    html_text = page.read_text()
    assert re.search(r'src="data:image/jpeg;base64,[A-Za-z0-9+/=]{100,}"', html_text)
    browser.get(page.as_uri())
    cards = browser.find_elements("css selector", ".card")
    assert len(cards) == 1
    assert (cards[0].find_element("css selector", ".start").text, cards[0].find_element("css selector", ".end").text) \
        == ("0.00", "2.00")
    assert browser.execute_script("return document.querySelector('.card img').naturalWidth;") == 320


def test_browser_urls() -> None:
    assert browser_url("gs://bucket/a dir/v.mp4") == "https://storage.googleapis.com/bucket/a%20dir/v.mp4"
    assert browser_url("https://example.com/v.mp4") == "https://example.com/v.mp4"
    assert browser_url("/videos/a b.mp4") == "file:///videos/a%20b.mp4"


def test_page_thumbnails_a_tar_member_and_says_where_it_plays(video: str, tmp_path: Path) -> None:
    import tarfile

    with tarfile.open(tmp_path / "shard.tar", "w") as archive:
        archive.add(video, "k.mp4")
    member = f"{tmp_path}/shard.tar#k.mp4"
    assert thumbnail_jpeg(member, 3.0) == thumbnail_jpeg(video, 3.0)
    page = render_html([moment(member, 0, 2.0, 4.0, 0.9, "A pattern moves.")], "pattern", "hybrid", 1)
    assert 'src="data:image/jpeg;base64,' in page and "plm-index serve</code> plays them" in page
    assert "plays them" not in render_html([moment(video, 0, 2.0, 4.0, 0.9, "x")], "pattern", "hybrid", 1)
