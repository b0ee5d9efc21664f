"""Turn decoded clips into task prompts for RunInference."""

from transforms.prompt.building import ClipTask, build_prompt, expand_tasks

__all__ = ["ClipTask", "build_prompt", "expand_tasks"]
