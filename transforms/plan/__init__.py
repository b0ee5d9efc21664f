"""Plan clips: fixed windows or content-based scenes, and the frames PLM sees of each."""

from core.sampling import plm_frame_indices
from transforms.plan.planning import (
    PlanClips,
    clip_from_window,
    fixed_windows,
    plan_clips,
    split_long,
)
from transforms.plan.scenes import detect_scene_cuts

__all__ = ["PlanClips", "clip_from_window", "detect_scene_cuts", "fixed_windows", "plan_clips",
           "plm_frame_indices", "split_long"]
