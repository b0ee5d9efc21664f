"""Plan clips: fixed windows or content-based scenes, and the frames PLM sees of each.

``PlanClips`` (the Beam stage) and ``detect_scene_cuts`` (PySceneDetect) are loaded on first use, so
planning imports without Beam or PySceneDetect (the GPU bench drives it on a machine that has neither).
"""

from typing import Any

from core.sampling import plm_frame_indices
from transforms.plan.planning import clip_from_window, fixed_windows, plan_clips, plan_video, split_long

__all__ = ["PlanClips", "clip_from_window", "detect_scene_cuts", "fixed_windows", "plan_clips", "plan_video",
           "plm_frame_indices", "split_long"]


def __getattr__(name: str) -> Any:
    if name == "PlanClips":
        from transforms.plan.stage import PlanClips

        return PlanClips
    if name == "detect_scene_cuts":
        from transforms.plan.scenes import detect_scene_cuts

        return detect_scene_cuts
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
