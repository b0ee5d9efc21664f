"""One home per task: name, prompt, token budget, expansion, answer readings, rows and metric.

Each task is one module of this package holding a ``TASK`` (a ``tasks.base.Task``); the registry
below finds them, so adding a task means adding its module (and its test), nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from tasks.base import Target, Task

__all__ = ["Target", "Task", "all_tasks", "benchmark_task_names", "check_task_names", "get_task", "task_names"]


@cache
def all_tasks() -> tuple[Task, ...]:
    """Every task of this package, in list order (``Task.order``, then name)."""
    found: list[Task] = []
    for module in pkgutil.iter_modules(__path__):
        task = getattr(importlib.import_module(f"{__name__}.{module.name}"), "TASK", None)
        if isinstance(task, Task):
            found.append(task)
    names = [t.name for t in found]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise RuntimeError(f"two task modules claim the name(s) {duplicated}")
    return tuple(sorted(found, key=lambda t: (t.order, t.name)))


def task_names() -> tuple[str, ...]:
    """Names of every task, for ``--tasks`` and manifests."""
    return tuple(t.name for t in all_tasks())


def benchmark_task_names() -> tuple[str, ...]:
    """Names of the tasks ``plm-index eval`` can score (those with a benchmark annotation format)."""
    return tuple(t.name for t in all_tasks() if t.annotation is not None)


def check_task_names(names: list[str] | tuple[str, ...]) -> None:
    """Raise a ValueError naming every unknown task and the known ones (for configs and manifest rows)."""
    known = task_names()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {', '.join(known)}")


def get_task(name: str) -> Task:
    """The task called ``name``, or a ValueError listing the known ones."""
    for task in all_tasks():
        if task.name == name:
            return task
    raise ValueError(f"unknown task {name!r}; known: {', '.join(task_names())}")
