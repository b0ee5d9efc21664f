"""What the region tasks (rcap, rtloc, rdcap) share: expansion over a clip's regions, region
columns, and the benchmark's sampling for them (lmms-eval's ``load_video``: 32 of all frames)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from core.sampling import plm_frame_indices
from schemas.benchmark import Box, RegionAnnotation
from schemas.records import ClipPlan, RegionOnClip, VideoInfo
from tasks.base import Target, Task
from tasks.prompts import NUM_VIDEO_FRAMES, benchmark_frame_index


def region_columns(region: RegionOnClip) -> dict[str, Any]:
    """The region's id and its boxes on the clip's sampled frames, as segment columns."""
    boxes = [{"frame": k, "x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3]}
             for k, b in enumerate(region.boxes) if b is not None]
    return {"region_id": region.region_id, "region_boxes": boxes}


class RegionTask(Task):
    """A task about a tracked region: one prompt per region of the clip that asks for this task."""

    region_task = True
    needs_caption = False
    """Whether a region needs a caption to be asked (RTLoc localises a described event)."""

    def targets(self, clip: ClipPlan) -> Iterator[Target]:
        for region in clip.regions:
            if region.tasks and self.name not in region.tasks:
                continue
            if self.needs_caption and not region.caption:
                continue
            yield Target(region_id=region.region_id)

    def eval_positions(self, info: VideoInfo, row: RegionAnnotation) -> list[int]:
        """32 of all the video's frames (lmms-eval asserts 32 or more; fewer repeat, PLM's rule)."""
        return plm_frame_indices(info.num_frames, NUM_VIDEO_FRAMES)

    def eval_boxes(self, row: RegionAnnotation) -> dict[int, Box] | None:
        return row.bbox

    @staticmethod
    def gt_frame(frame: int, row: RegionAnnotation) -> int:
        """A source frame in the benchmark's 32-frame space (lmms-eval truncates)."""
        return benchmark_frame_index(frame, row.total_frames, NUM_VIDEO_FRAMES)
