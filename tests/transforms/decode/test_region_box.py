"""The region box is drawn at full resolution, before the 448 resize, as PLM-VideoBench does."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transforms.decode.frames import BOX_WIDTH, FrameImages, apply_rotation, draw_box, resize_exact

SIZE = 448


def prepare_frame(rgb: np.ndarray, rotation: int, box: tuple[float, float, float, float] | None,
                  size: int) -> np.ndarray:
    """A decoded frame as the decoder (build and eval alike) turns it into what PLM sees."""
    images = FrameImages(lambda: apply_rotation(rgb, rotation), size)
    return images.with_box(box) if box is not None else images.plain()


draw_region = draw_box


def _red_mask(rgb: np.ndarray, min_red: int = 128) -> np.ndarray:
    """Pixels that are clearly red: strong R, weak G and B."""
    r, g, b = (rgb[..., c].astype(int) for c in range(3))
    return (r >= min_red) & (g < 40) & (b < 40)


@pytest.mark.parametrize("height,width", [(672, 896), (240, 320)])
def test_box_edges_land_on_the_scaled_box_after_resize(height: int, width: int) -> None:
    frame = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = (int(width * 0.25), int(height * 0.2), int(width * 0.7), int(height * 0.8))
    out = prepare_frame(frame, 0, (x1, y1, x2, y2), SIZE)
    assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8
    sx, sy = SIZE / width, SIZE / height
    red = _red_mask(out)
    mid_y, mid_x = int((y1 + y2) / 2 * sy), int((x1 + x2) / 2 * sx)
    # Each edge's stroke, scaled: [edge*s, (edge+4)*s) on the near side, [(edge-3)*s, (edge+1)*s) far side.
    strokes = {
        "left": (red[mid_y, :mid_x], x1 * sx, (x1 + BOX_WIDTH) * sx),
        "right": (red[mid_y, mid_x:], (x2 - BOX_WIDTH + 1) * sx - mid_x, (x2 + 1) * sx - mid_x),
        "top": (red[:mid_y, mid_x], y1 * sy, (y1 + BOX_WIDTH) * sy),
        "bottom": (red[mid_y:, mid_x], (y2 - BOX_WIDTH + 1) * sy - mid_y, (y2 + 1) * sy - mid_y),
    }
    for name, (line, lo, hi) in strokes.items():
        hits = np.flatnonzero(line)
        assert hits.size, f"no red along the {name} edge"
        assert hits.min() >= math.floor(lo) - 1 and hits.max() <= math.ceil(hi), (name, hits, lo, hi)
        # The stroke is 4 px at full resolution, so about 4*scale px after the resize (not 4 px).
        assert hits.size <= math.ceil(BOX_WIDTH * (sx if name in ("left", "right") else sy)) + 1, (name, hits)
    # Inside and outside the box the frame stays black.
    inner = out[int((y1 + 8) * sy) + 2:int((y2 - 8) * sy) - 2, int((x1 + 8) * sx) + 2:int((x2 - 8) * sx) - 2]
    assert inner.size and int(inner.max()) == 0
    assert int(out[: max(0, int(y1 * sy) - 3)].max(initial=0)) == 0
    # Same pixels as drawing on the original frame and then resizing, and not as the other order.
    assert np.array_equal(out, resize_exact(draw_box(frame, (x1, y1, x2, y2)), SIZE))
    scaled = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
    assert not np.array_equal(out, draw_box(resize_exact(frame, SIZE), scaled))


def test_no_box_leaves_the_frame_unchanged() -> None:
    frame = np.full((240, 320, 3), 90, np.uint8)
    assert np.array_equal(prepare_frame(frame, 0, None, SIZE), resize_exact(frame, SIZE))
    assert not _red_mask(prepare_frame(frame, 0, None, SIZE), 100).any()


def test_box_is_drawn_in_upright_coordinates() -> None:
    """A rotated video is turned upright first; the box is in the displayed frame's pixels."""
    stored = np.zeros((200, 300, 3), np.uint8)  # displayed as 300 x 200 (rotation 90)
    out = prepare_frame(stored, 90, (20, 30, 150, 250), SIZE)
    upright = np.rot90(stored, 1)
    assert upright.shape[:2] == (300, 200)
    assert np.array_equal(out, resize_exact(draw_box(np.ascontiguousarray(upright), (20, 30, 150, 250)), SIZE))


def test_draw_region_matches_the_benchmarks_pil_rectangle() -> None:
    """lmms-eval draws with PIL ``ImageDraw.rectangle(width=4)``; fractional corners truncate."""
    image_module = pytest.importorskip("PIL.Image")
    draw_module = pytest.importorskip("PIL.ImageDraw")
    rng = np.random.default_rng(7)
    height, width = 120, 160
    for _ in range(200):
        x1, y1 = rng.uniform(0, width - 20), rng.uniform(0, height - 20)
        x2 = rng.uniform(x1 + 8, width - 1)
        y2 = rng.uniform(y1 + 8, height - 1)
        base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        pil = image_module.fromarray(base.copy())
        draw_module.Draw(pil).rectangle([(x1, y1), (x2, y2)], outline=(255, 0, 0), width=4)
        assert np.array_equal(draw_region(base, (x1, y1, x2, y2)), np.asarray(pil)), (x1, y1, x2, y2)
