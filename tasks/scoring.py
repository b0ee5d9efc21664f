"""PLM-VideoBench metric arithmetic shared by the tasks, written to score the way lmms-eval does.

Reference: EvolvingLMMs-Lab/lmms-eval, ``lmms_eval/tasks/plm_videobench/``: ``fgqa/fgqa_utils.py``
(MBAcc), ``rtloc/rtloc_utils.py`` with ``eval_utils.evaluate_detections``/``calculate_iou``
(recall at IoU > threshold, mIoU), ``rdcap/rdcap_utils.py`` with ``eval_utils.sodac_llm_score`` and
``chased_dp_assignment`` (SODA_c after Fujita et al., ECCV 2020), ``rcap/rcap_utils.py`` (judge
score / 10) and ``sgqa/sgqa_utils.py`` (share of "yes" judgements).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tasks.reading import FrameEvent, FrameRange

RTLOC_IOU_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)

Segment = tuple[float, float]
CaptionedSegment = tuple[float, float, str]


def temporal_iou(a: Segment, b: Segment) -> float:
    """IoU of two frame ranges exactly as lmms-eval's ``calculate_iou`` computes it.

    Each range is ordered first and treated as a continuous interval ``[start, end]`` (no +1);
    the union is ``min(span of both, sum of lengths)`` and 1e-8 is added to it, so identical
    ranges score just under 1, a zero-length range scores 0, and an IoU that is exactly a
    threshold on paper lands just below it (recall's ``>`` is then strict in both senses).
    """
    s1, e1 = min(float(a[0]), float(a[1])), max(float(a[0]), float(a[1]))
    s2, e2 = min(float(b[0]), float(b[1])), max(float(b[0]), float(b[1]))
    inter = max(0.0, min(e1, e2) - max(s1, s2))
    union = min(max(e1, e2) - min(s1, s2), e1 - s1 + e2 - s2)
    return inter / (union + 1e-8)


# ---------------------------------------------------------------------------------------- FGQA


def mbacc(rows: Iterable[Mapping[str, Any]], *, correct_key: str = "correct") -> float:
    """Multi-binary accuracy: rows grouped by ``qa_uid``; a group counts only if all its rows are correct.

    Each row needs ``qa_uid`` and ``correct_key`` (truthy when that row was answered correctly).
    The score is the mean over groups.
    """
    groups: dict[Any, bool] = {}
    for row in rows:
        uid = row["qa_uid"]
        groups[uid] = groups.get(uid, True) and bool(row[correct_key])
    if not groups:
        raise ValueError("mbacc needs at least one row")
    return sum(groups.values()) / len(groups)


# --------------------------------------------------------------------------------------- RTLoc


@dataclass(frozen=True)
class RtlocScores:
    """RTLoc results over a set of answers."""

    recall_at: dict[float, float]
    """Share of answers whose IoU with the ground truth is strictly above each threshold."""
    mean_recall: float
    """Mean of ``recall_at`` over the thresholds (the benchmark's headline "meanR")."""
    miou: float
    """Mean IoU, with unparseable answers counted as 0."""
    parse_errors: int
    count: int


def _range_of(pred: FrameRange | Segment | None) -> Segment | None:
    if pred is None:
        return None
    if isinstance(pred, FrameRange):
        if not pred.ok or pred.raw_start is None or pred.raw_end is None:
            return None
        # The numbers as written, not rounded or clamped: lmms-eval scores those.
        return pred.raw_start, pred.raw_end
    return float(pred[0]), float(pred[1])


def rtloc_scores(preds: Sequence[FrameRange | Segment | None], gts: Sequence[Segment],
                 thresholds: Sequence[float] = RTLOC_IOU_THRESHOLDS) -> RtlocScores:
    """Recall at temporal IoU > 0.3/0.5/0.7/0.9 (strict, as in lmms-eval), their mean, and mIoU.

    ``preds[i]`` is a parsed answer (``FrameRange``), a ``(start, end)`` pair or None for no answer;
    ``gts[i]`` is the ground-truth ``(start, end)`` in the same frame space. An unparseable answer
    can never match: lmms-eval substitutes a range past the ground truth, which has IoU 0.
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} ground truths")
    if not gts:
        raise ValueError("rtloc_scores needs at least one answer")
    hits = dict.fromkeys(thresholds, 0)
    iou_total = 0.0
    errors = 0
    for pred, gt in zip(preds, gts, strict=True):
        segment = _range_of(pred)
        if segment is None:
            errors += 1
            continue
        iou = temporal_iou(segment, gt)
        iou_total += iou
        for threshold in thresholds:
            if iou > threshold:
                hits[threshold] += 1
    n = len(gts)
    recall_at = {threshold: hits[threshold] / n for threshold in thresholds}
    return RtlocScores(recall_at=recall_at, mean_recall=sum(recall_at.values()) / len(recall_at),
                       miou=iou_total / n, parse_errors=errors, count=n)


# --------------------------------------------------------------------------------------- RDCap


def soda_match(scores: Sequence[Sequence[float]]) -> tuple[float, list[tuple[int, int]]]:
    """SODA's order-preserving assignment: the best total score and the matched (gt, pred) pairs.

    ``scores[g][p] >= 0`` scores ground-truth item g against prediction p. Each item is matched at
    most once and matches may not cross (if g1 < g2 are matched to p1 and p2 then p1 < p2), so
    the order of both lists matters; lmms-eval keeps them in the order given. Dynamic programming:
    ``best[g][p] = max(best[g-1][p], best[g][p-1], best[g-1][p-1] + scores[g-1][p-1])``.
    """
    rows = len(scores)
    cols = len(scores[0]) if rows else 0
    best = [[0.0] * (cols + 1) for _ in range(rows + 1)]
    for g in range(1, rows + 1):
        if len(scores[g - 1]) != cols:
            raise ValueError("score matrix rows differ in length")
        for p in range(1, cols + 1):
            best[g][p] = max(best[g - 1][p], best[g][p - 1], best[g - 1][p - 1] + float(scores[g - 1][p - 1]))
    pairs: list[tuple[int, int]] = []
    g, p = rows, cols
    while g > 0 and p > 0:
        if best[g][p] == best[g - 1][p]:
            g -= 1
        elif best[g][p] == best[g][p - 1]:
            p -= 1
        else:
            pairs.append((g - 1, p - 1))
            g, p = g - 1, p - 1
    pairs.reverse()
    return best[rows][cols], pairs


def _captioned(item: FrameEvent | CaptionedSegment) -> CaptionedSegment | None:
    if isinstance(item, FrameEvent):
        if not item.ok or item.raw_start is None or item.raw_end is None:
            return None
        return item.raw_start, item.raw_end, item.text
    return float(item[0]), float(item[1]), item[2]


def soda_c(pred_segments: Sequence[FrameEvent | CaptionedSegment],
           gt_segments: Sequence[CaptionedSegment],
           caption_score_fn: Callable[[str, str], float]) -> float:
    """SODA_c for one video: F1 of SODA's matching over IoU x caption score.

    ``pred_segments`` are parsed RDCap events (those with ``error`` are ignored) or
    ``(start, end, caption)``; ``gt_segments`` are ``(start, end, caption)`` in the same frame
    space. ``caption_score_fn(gt_caption, pred_caption)`` returns a score in [0, 1] (the judge's
    0-10 divided by 10). With S the best matching total, precision = S / #pred, recall = S / #gt
    and the result is their F1. No valid prediction scores 0. Pairs whose IoU is 0 are not sent
    to ``caption_score_fn`` (their product is 0 either way), which saves judge calls.
    """
    if not gt_segments:
        raise ValueError("soda_c needs at least one ground-truth segment")
    preds = [c for c in (_captioned(item) for item in pred_segments) if c is not None]
    if not preds:
        return 0.0
    matrix: list[list[float]] = []
    for gs, ge, gcap in gt_segments:
        row = []
        for ps, pe, pcap in preds:
            iou = temporal_iou((ps, pe), (gs, ge))
            row.append(iou * float(caption_score_fn(gcap, pcap)) if iou > 0 else 0.0)
        matrix.append(row)
    total, _ = soda_match(matrix)
    precision = total / len(preds)
    recall = total / len(gt_segments)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


# ---------------------------------------------------------------------------------- RCap, SGQA


def rcap_score(judge_scores: Sequence[float]) -> float:
    """Mean of the judge's 0-10 caption scores, divided by 10 (a failed judgement counts as 0)."""
    if not judge_scores:
        raise ValueError("rcap_score needs at least one score")
    return sum(float(s) for s in judge_scores) / len(judge_scores) / 10


def sgqa_accuracy(judgements: Sequence[Any]) -> float:
    """Share of SGQA answers the judge called correct ("yes"); its 0-5 score is not used.

    Each item is a judgement with a ``correct`` attribute or a plain bool.
    """
    if not judgements:
        raise ValueError("sgqa_accuracy needs at least one judgement")
    correct = sum(1 for j in judgements if bool(getattr(j, "correct", j)))
    return correct / len(judgements)
