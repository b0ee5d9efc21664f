"""Content-based shot cuts with PySceneDetect, fed by a low-resolution decode."""

from __future__ import annotations

from scenedetect import ContentDetector, SceneManager
from scenedetect.backends.pyav import VideoStreamAv

from core import storage


def detect_scene_cuts(uri: str, threshold: float = 27.0) -> list[float]:
    """Times (s) where a new shot starts, excluding 0.

    The detector sees a downscaled copy of each frame (PySceneDetect's auto downscale to
    about 256 px wide), so the cost is dominated by decoding, not by the comparison.
    """
    handle = None if storage.opens_by_path(uri) else storage.open_read(uri)
    try:
        video = VideoStreamAv(handle if handle is not None else uri, threading_mode="AUTO",
                              suppress_output=True)
        manager = SceneManager()
        manager.auto_downscale = True
        manager.add_detector(ContentDetector(threshold=threshold))
        manager.detect_scenes(video=video, show_progress=False)
        scenes = manager.get_scene_list(start_in_scene=True)
    finally:
        if handle is not None:
            handle.close()
    return [float(start.get_seconds()) for start, _ in scenes[1:]]
