"""PLM-VideoBench metrics on small hand-worked cases."""

from __future__ import annotations

import pytest

from evaluation.judge import ExactMatchJudge, SgqaJudgement, caption_scorer
from tasks.reading import FrameRange, parse_dense_captions, parse_frame_range
from tasks.scoring import (
    mbacc,
    rcap_score,
    rtloc_scores,
    sgqa_accuracy,
    soda_c,
    soda_match,
    temporal_iou,
)

# ----------------------------------------------------------------------------------------- FGQA


def test_mbacc_counts_a_group_only_when_all_rows_are_correct() -> None:
    rows = [
        {"qa_uid": "q1", "correct": True}, {"qa_uid": "q1", "correct": True},   # group 1: 1
        {"qa_uid": "q2", "correct": True}, {"qa_uid": "q2", "correct": False},  # group 2: 0
        {"qa_uid": "q3", "correct": False},                                     # group 3: 0
        {"qa_uid": "q4", "correct": True},                                      # group 4: 1
    ]
    # (1 + 0 + 0 + 1) / 4 groups = 0.5; plain per-row accuracy would be 4/6.
    assert mbacc(rows) == pytest.approx(0.5)


def test_mbacc_accepts_lmms_eval_accuracy_key_and_rejects_empty() -> None:
    assert mbacc([{"qa_uid": 1, "accuracy": 1.0}, {"qa_uid": 2, "accuracy": 0.0}],
                 correct_key="accuracy") == pytest.approx(0.5)
    with pytest.raises(ValueError):
        mbacc([])


# ---------------------------------------------------------------------------------------- RTLoc


def test_temporal_iou_continuous_intervals() -> None:
    assert temporal_iou((0, 10), (5, 15)) == pytest.approx(5 / 15)  # inter 5, union 15
    assert temporal_iou((10, 0), (0, 5)) == pytest.approx(0.5)  # reversed range is ordered
    assert temporal_iou((0, 5), (5, 10)) == 0.0  # touching ranges do not overlap
    assert temporal_iou((5, 5), (5, 5)) == 0.0  # zero length, as lmms-eval's union + 1e-8 gives


def test_rtloc_scores_strict_thresholds_and_unparseable() -> None:
    preds = [(0, 10), (0, 10), (0, 10), parse_frame_range("no idea")]
    gts = [(0, 10), (5, 15), (0, 5), (3, 8)]
    # IoUs: 1, 5/15 = 0.333, 5/10 = 0.5 (not > 0.5: strict), unparseable = 0.
    scores = rtloc_scores(preds, gts)
    assert scores.recall_at == pytest.approx({0.3: 3 / 4, 0.5: 1 / 4, 0.7: 1 / 4, 0.9: 1 / 4})
    # mean recall (0.75 + 0.25 + 0.25 + 0.25) / 4 = 0.375
    assert scores.mean_recall == pytest.approx(0.375)
    # mIoU (1 + 1/3 + 0.5 + 0) / 4 = 0.458333
    assert scores.miou == pytest.approx((1 + 1 / 3 + 0.5) / 4)
    assert (scores.parse_errors, scores.count) == (1, 4)


def test_rtloc_scores_use_the_numbers_as_written() -> None:
    # lmms-eval neither clamps nor rounds: [0, 40] vs [0, 31] is 31 / 40 = 0.775 (clamping would give 1).
    pred = parse_frame_range("[0, 40]")
    assert pred.clamped
    scores = rtloc_scores([pred], [(0, 31)])
    assert scores.miou == pytest.approx(0.775)
    assert scores.recall_at[0.7] == 1.0 and scores.recall_at[0.9] == 0.0


def test_rtloc_scores_none_and_length_mismatch() -> None:
    assert rtloc_scores([None], [(0, 4)]).mean_recall == 0.0
    assert rtloc_scores([FrameRange(raw_text="", error="empty answer")], [(0, 4)]).parse_errors == 1
    with pytest.raises(ValueError):
        rtloc_scores([(0, 1)], [])


# ---------------------------------------------------------------------------------------- RDCap


def test_soda_match_keeps_order() -> None:
    # Rows are ground truth, columns predictions. (0,0) + (1,1) = 1.0 + 0.1 = 1.1 beats 0.9 or 0.8 alone.
    assert soda_match([[1.0, 0.9], [0.8, 0.1]]) == (pytest.approx(1.1), [(0, 0), (1, 1)])
    # Crossing pairs (0,1) + (1,0) would total 2 but are not allowed: the best is 1.
    best, pairs = soda_match([[0.0, 1.0], [1.0, 0.0]])
    assert best == pytest.approx(1.0) and len(pairs) == 1


def test_soda_c_hand_worked() -> None:
    gts = [(0, 10, "a cat jumps"), (10, 20, "a dog runs")]
    preds = [(0, 10, "a cat jumps"), (12, 20, "a dog runs"), (25, 30, "a bird sings")]
    calls: list[tuple[str, str]] = []
    scorer = caption_scorer(ExactMatchJudge())

    def score(gt: str, pred: str) -> float:
        calls.append((gt, pred))
        return scorer(gt, pred)

    # IoU x score: gt0-pred0 = 1 x 1, gt1-pred1 = (8/10) x 1, every other pair has IoU 0.
    # S = 1.8; precision = 1.8 / 3 = 0.6; recall = 1.8 / 2 = 0.9; F1 = 2 * 0.54 / 1.5 = 0.72.
    assert soda_c(preds, gts, score) == pytest.approx(0.72)
    assert sorted(calls) == [("a cat jumps", "a cat jumps"), ("a dog runs", "a dog runs")]


def test_soda_c_with_parsed_events_ignores_error_events() -> None:
    events = parse_dense_captions("Events:\n[0, 10]: a cat jumps")
    assert not events[0].ok
    # One valid prediction matching the one ground truth exactly: S = 1, P = R = F1 = 1.
    assert soda_c(events, [(0, 10, "a cat jumps")], lambda gt, pred: 1.0) == pytest.approx(1.0)


def test_soda_c_scores_zero_without_valid_predictions() -> None:
    assert soda_c(parse_dense_captions("nothing useful"), [(0, 10, "x")], lambda gt, pred: 1.0) == 0.0
    assert soda_c([(0, 10, "y")], [(0, 10, "x")], lambda gt, pred: 0.0) == 0.0
    with pytest.raises(ValueError):
        soda_c([(0, 10, "y")], [], lambda gt, pred: 1.0)


# ------------------------------------------------------------------------------------ RCap, SGQA


def test_rcap_score_is_mean_over_ten() -> None:
    # (7 + 3 + 0 + 10) / 4 = 5 -> 0.5
    assert rcap_score([7, 3, 0, 10]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        rcap_score([])


def test_sgqa_accuracy_is_share_of_yes() -> None:
    assert sgqa_accuracy([True, False, True, True]) == pytest.approx(0.75)
    judged = [SgqaJudgement(correct=True, score=4, parsed=True, raw=""),
              SgqaJudgement(correct=False, score=5, parsed=True, raw="")]  # the score is not used
    assert sgqa_accuracy(judged) == pytest.approx(0.5)
