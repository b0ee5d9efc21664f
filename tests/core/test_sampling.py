"""PLM's sampling rules against oracles written from their descriptions, in exact arithmetic.

The loader rule (perception_models ``VideoTransform.load_video``): candidates one second apart,
thinned with ``round(i * (m - 1) / 31)``; with fewer than 32 candidates the same rule runs over all
frames. The all-frames rule (lmms-eval ``load_video``): ``round(i * (N - 1) / 31)`` over every frame.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from core.sampling import loader_stride, plm_frame_indices, plm_loader_positions, uniform_or_all

SECONDS = (10, 30, 32, 45, 60)
RATES = (24, 25, 30, 60)


def _round_half_even(x: Fraction) -> int:
    whole = x.numerator // x.denominator
    rest = x - whole
    if rest != Fraction(1, 2):
        return whole + (rest > Fraction(1, 2))
    return whole + whole % 2


def thin_oracle(items: list[int], n: int = 32) -> list[int]:
    """``n`` of ``items`` at ``round(i * (m - 1) / (n - 1))``, computed exactly."""
    m = len(items)
    return [items[_round_half_even(Fraction(i * (m - 1), n - 1))] for i in range(n)]


def all_frames_oracle(num_frames: int) -> list[int]:
    return thin_oracle(list(range(num_frames)))


def loader_oracle(num_frames: int, fps: float) -> list[int]:
    """One candidate per second (every round(fps)-th frame from the first), then thinned; too few: all frames."""
    per_second = _round_half_even(Fraction(fps).limit_denominator(1000))
    candidates = [k for k in range(num_frames) if k % per_second == 0]
    if len(candidates) >= 32:
        return thin_oracle(candidates)
    return all_frames_oracle(num_frames)


@pytest.mark.parametrize("seconds", SECONDS)
@pytest.mark.parametrize("fps", RATES)
def test_both_rules_match_their_oracles(seconds: int, fps: int) -> None:
    frames = seconds * fps
    loader = plm_loader_positions(0, frames, fps, 32)
    assert loader == loader_oracle(frames, fps)
    assert plm_frame_indices(frames, 32) == all_frames_oracle(frames)
    assert uniform_or_all(0, frames, 32) == all_frames_oracle(frames)
    # Both rules agree below 32 s (fewer than 32 one-second candidates) and part from 32 s on.
    assert (loader == all_frames_oracle(frames)) is (seconds < 32)


def test_loader_offsets_and_short_ranges() -> None:
    assert plm_loader_positions(100, 45 * 25, 25, 32) == [100 + p for p in loader_oracle(45 * 25, 25)]
    # Fewer than 32 frames: the index repeats frames, the loader itself takes each once.
    assert plm_loader_positions(0, 20, 25, 32) == [round(i * 19 / 31) for i in range(32)]
    assert plm_loader_positions(0, 20, 25, 32, repeat_short=False) == list(range(20))
    assert loader_stride(29.97) == 30 and loader_stride(0.5) == 1
    with pytest.raises(ValueError, match="at least one frame"):
        plm_loader_positions(0, 0, 25, 32)
    with pytest.raises(ValueError, match="fps must be positive"):
        loader_stride(0)
