"""Showing moments: a terminal table, JSON, thumbnails and a self-contained HTML results page."""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core import storage, tar
from core.paths import local_path
from search.moments import Moment, SearchHit

log = logging.getLogger(__name__)

TEXT_WIDTH = 60
URI_WIDTH = 40
THUMB_WIDTH = 320



def clock(seconds: float) -> str:
    """Seconds as ``m:ss`` (``h:mm:ss`` from an hour), rounded down to the second."""
    total = max(int(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def shorten(text: str, width: int, keep_end: bool = False) -> str:
    """Text on one line, cut to ``width`` characters with ``...`` (at the start if ``keep_end``)."""
    line = re.sub(r"\s+", " ", text).strip()
    if len(line) <= width:
        return line
    return "..." + line[-(width - 3):] if keep_end else line[: width - 3].rstrip() + "..."


def format_table(hits: list[SearchHit] | list[Moment]) -> str:
    """A fixed-width terminal table of hits or moments: rank, score, seconds, m:ss, uri and text."""
    header = ("#", "score", "start-end (s)", "time", "uri", "text")
    rows = [(str(rank), f"{hit.score:.3f}", f"{hit.start_s:.2f}-{hit.end_s:.2f}",
             f"{clock(hit.start_s)}-{clock(hit.end_s)}", shorten(hit.uri, URI_WIDTH, keep_end=True),
             shorten(hit.text, TEXT_WIDTH))
            for rank, hit in enumerate(hits, start=1)]
    widths = [max(len(row[col]) for row in [header, *rows]) for col in range(len(header))]
    right = {0, 1}  # numbers right-aligned

    def line(cells: tuple[str, ...]) -> str:
        parts = [cell.rjust(w) if col in right else cell.ljust(w)
                 for col, (cell, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(row) for row in rows)])


def moment_dict(moment: Moment) -> dict[str, Any]:
    """A moment as JSON-ready data: its span, score, text, first clip index, clip indices and merged hits."""
    return {"uri": moment.uri, "video_id": moment.video_id, "task": moment.task, "start_s": moment.start_s,
            "end_s": moment.end_s, "score": moment.score, "text": moment.text,
            "clip_index": moment.clip_indices[0], "clip_indices": moment.clip_indices, "hits": [asdict(h) for h in moment.hits]}


def hits_to_json(hits: list[SearchHit] | list[Moment]) -> str:
    """Hits (every ``SearchHit`` field) or moments (see ``moment_dict``) as a JSON array."""
    data = [moment_dict(h) if isinstance(h, Moment) else asdict(h) for h in hits]
    return json.dumps(data, indent=1, ensure_ascii=False)


def browser_url(uri: str) -> str:
    """A URL a browser can open for a video uri.

    Local paths become ``file://`` URLs, ``gs://bucket/key`` becomes
    ``https://storage.googleapis.com/bucket/key`` (it plays only if the object is public or the
    browser is signed in to an account that may read it); other URLs are kept.
    """
    if uri.startswith("gs://"):
        bucket_key = uri[len("gs://"):]
        bucket, _, key = bucket_key.partition("/")
        from urllib.parse import quote

        return f"https://storage.googleapis.com/{bucket}/{quote(key)}"
    if storage.is_remote(uri) or uri.startswith("file://"):
        return uri
    return Path(os.path.abspath(uri)).as_uri()


def thumbnail_jpeg(uri: str, at_s: float, width: int = THUMB_WIDTH) -> bytes:
    """A JPEG of the frame shown at ``at_s`` seconds (the first frame at or after it), ``width`` px wide."""
    import av

    with open(local_path(uri), "rb") if storage.opens_by_path(uri) else storage.open_read(uri) as f, av.open(f) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if stream.time_base is not None and at_s > 0:
            container.seek(int(at_s / stream.time_base), stream=stream, backward=True, any_frame=False)
        chosen = None
        for frame in container.decode(stream):
            chosen = frame
            if frame.time is not None and frame.time + 1e-6 >= at_s:
                break
        if chosen is None:
            raise ValueError(f"no frame decoded from {uri}")
        image = chosen.to_image()
        height = max(1, round(image.height * width / image.width))
        buffer = io.BytesIO()
        image.resize((width, height)).save(buffer, format="JPEG", quality=80)
        return buffer.getvalue()


_PAGE_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#f6f6f6;color:#222}
h1{font-size:1.2rem} .note{color:#666;font-size:.85rem}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:1rem}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002;padding:.6rem;cursor:pointer}
.card img,.card video{width:100%;border-radius:4px;display:block;background:#000}
.meta{display:flex;justify-content:space-between;font-size:.85rem;margin:.4rem 0}
.uri{font-family:monospace;font-size:.8rem;word-break:break-all;color:#555}
.text{font-size:.9rem;margin-top:.3rem} .missing{padding:3rem 0;text-align:center;background:#ddd}
"""

_PAGE_SCRIPT = """
document.querySelectorAll('.card').forEach(function (card) {
  card.addEventListener('click', function () {
    if (card.querySelector('video')) return;
    var video = document.createElement('video');
    video.controls = true; video.autoplay = true;
    video.src = card.dataset.src;
    video.addEventListener('error', function () {
      card.querySelector('.note').textContent = 'This browser cannot open ' + card.dataset.src;
    });
    var thumb = card.querySelector('.thumb');
    thumb.replaceWith(video);
    video.play().catch(function () {});
  });
});
"""


def render_html(moments: list[Moment], query: str, mode: str, searched: int) -> str:
    """A self-contained results page: one card per moment with a thumbnail (JPEG data URI) of
    its midpoint, its uri, times and text; clicking a card plays ``uri#t=start,end``."""
    cards = []
    thumbs: dict[tuple[str, float], str] = {}
    for rank, m in enumerate(moments, start=1):
        middle = round((m.start_s + m.end_s) / 2, 3)
        key = (m.uri, middle)
        if key not in thumbs:
            try:
                data = base64.b64encode(thumbnail_jpeg(m.uri, middle)).decode()
                thumbs[key] = f'<img class="thumb" alt="frame at {middle:.2f} s" src="data:image/jpeg;base64,{data}">'
            except Exception as exc:  # a missing or unreadable video still gets its card
                log.warning("no thumbnail for %s at %.2f s: %s", m.uri, middle, exc)
                thumbs[key] = f'<div class="thumb missing">no thumbnail ({html.escape(type(exc).__name__)})</div>'
        src = f"{browser_url(m.uri)}#t={m.start_s:.3f},{m.end_s:.3f}"
        clips = ", ".join(str(c) for c in m.clip_indices)
        cards.append(
            f'<div class="card" data-rank="{rank}" data-start="{m.start_s:.3f}" data-end="{m.end_s:.3f}" '
            f'data-src="{html.escape(src)}" title="click to play from {m.start_s:.2f} s">'
            f"{thumbs[key]}"
            f'<div class="meta"><span class="times">{clock(m.start_s)}&ndash;{clock(m.end_s)} '
            f'(<span class="start">{m.start_s:.2f}</span>&ndash;<span class="end">{m.end_s:.2f}</span> s)</span>'
            f'<span class="score">#{rank} &middot; {m.score:.3f}</span></div>'
            f'<div class="uri">{html.escape(m.uri)}</div>'
            f'<div class="text">{html.escape(m.text)}</div>'
            f'<div class="note">{html.escape(m.task)} &middot; clips {clips}</div></div>')
    body = "\n".join(cards) if cards else '<p class="empty">No moment matches.</p>'
    gs_note = ('<p class="note">gs:// videos play from storage.googleapis.com only if the object is public '
               "or this browser is signed in to an account that can read it.</p>"
               if any(m.uri.startswith("gs://") for m in moments) else "")
    if any(tar.is_member_uri(m.uri) for m in moments):
        gs_note += ('<p class="note">Videos inside tar shards (<code>shard.tar#member</code>) cannot be opened by a '
                    "browser from this page: <code>plm-index serve</code> plays them.</p>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(shorten(query, 80))} - plm-index search</title>"
            f"<style>{_PAGE_STYLE}</style></head><body>"
            f"<h1>{html.escape(shorten(query, 200))}</h1>"
            f'<p class="note">{len(moments)} moments &middot; {html.escape(mode)} search over {searched} segments '
            f"&middot; click a card to play the clip</p>{gs_note}"
            f'<div class="cards">{body}</div><script>{_PAGE_SCRIPT}</script></body></html>\n')
