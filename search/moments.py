"""Hits and moments: ranked units, and hits of one video and task merged into the span they cover."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MERGE_GAP_S = 1.0


@dataclass(frozen=True)
class SearchHit:
    """One ranked unit (a segment's own span or one of its events): where it is in which video, its score and its text."""

    uri: str
    video_id: str
    clip_index: int
    start_s: float
    end_s: float
    score: float
    task: str
    text: str


@dataclass(frozen=True)
class Moment:
    """Adjacent hits of one video and task merged: the span they cover, the best score, their texts."""

    uri: str
    video_id: str
    task: str
    start_s: float
    end_s: float
    score: float
    text: str
    hits: tuple[SearchHit, ...]

    @property
    def clip_indices(self) -> list[int]:
        """The clip indices of the merged hits, in time order."""
        return [hit.clip_index for hit in self.hits]


def merge_hits(hits: list[SearchHit], gap_s: float | None = DEFAULT_MERGE_GAP_S) -> list[Moment]:
    """Merge hits of one video and task whose spans overlap, touch or are ``gap_s`` apart.

    A moment spans its hits, scores as the best of them and lists their texts in time order
    (repeated texts once). Moments come best first; ``gap_s=None`` makes one moment per hit.
    """
    def moment(group: list[SearchHit]) -> Moment:
        ordered = sorted(group, key=lambda h: (h.start_s, h.end_s, h.clip_index))
        texts = list(dict.fromkeys(h.text for h in ordered if h.text))
        return Moment(uri=ordered[0].uri, video_id=ordered[0].video_id, task=ordered[0].task,
                      start_s=min(h.start_s for h in ordered), end_s=max(h.end_s for h in ordered),
                      score=max(h.score for h in ordered), text=" | ".join(texts), hits=tuple(ordered))

    if gap_s is None:
        return [moment([h]) for h in hits]
    groups: dict[tuple[str, str], list[SearchHit]] = {}
    for hit in hits:
        groups.setdefault((hit.video_id, hit.task), []).append(hit)
    moments: list[tuple[int, Moment]] = []
    rank = {id(h): i for i, h in enumerate(hits)}
    for group in groups.values():
        group.sort(key=lambda h: (h.start_s, h.end_s))
        current = [group[0]]
        end = group[0].end_s
        for hit in group[1:]:
            if hit.start_s <= end + gap_s:
                current.append(hit)
                end = max(end, hit.end_s)
            else:
                moments.append((min(rank[id(h)] for h in current), moment(current)))
                current, end = [hit], hit.end_s
        moments.append((min(rank[id(h)] for h in current), moment(current)))
    moments.sort(key=lambda pair: (-pair[1].score, pair[0]))
    return [m for _, m in moments]
