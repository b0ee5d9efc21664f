"""The task registry: every task found from its own module, and every caller reading its list from it."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

import tasks
from index.read import conform_segments
from pipeline.build import run_build
from pipeline.cli import build_parser
from schemas.config import BuildConfig, ModelConfig
from schemas.manifest import ManifestError
from schemas.tables import SEGMENTS_SCHEMA
from tasks import all_tasks, benchmark_task_names, check_task_names, get_task, task_names
from transforms.discover.manifest import load_manifest


def test_every_task_module_is_found_in_list_order() -> None:
    assert task_names() == ("caption", "fgqa", "sgqa", "rcap", "rtloc", "rdcap")
    assert benchmark_task_names() == ("fgqa", "sgqa", "rcap", "rtloc", "rdcap")
    for task in all_tasks():
        assert get_task(task.name) is task
        if task.annotation is not None:
            assert task.headline and task.max_new_tokens
    assert {t.name for t in all_tasks() if t.judged} == {"sgqa", "rcap", "rdcap"}
    assert get_task("caption").budget(48) == 48 and get_task("rdcap").budget(48) == 512


def test_unknown_task_names_say_which_exist() -> None:
    with pytest.raises(ValueError, match="unknown task 'ocr'; known: caption, fgqa, sgqa, rcap, rtloc, rdcap"):
        get_task("ocr")
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['ocr'\]; known: caption, fgqa"):
        check_task_names(("caption", "ocr"))


def test_unknown_tasks_stop_a_build_and_mark_a_manifest_row(tmp_path) -> None:  # noqa: ANN001
    config = BuildConfig(input=str(tmp_path), output=str(tmp_path / "index"), model=ModelConfig(model="m"),
                         tasks=("caption", "ocr"))
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['ocr'\]"):
        run_build(config, PipelineOptions(["--runner=FnApiRunner"]))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"uri": "a.mp4", "tasks": ["caption"]}\n{"uri": "b.mp4", "tasks": ["ocr"]}\n')
    with pytest.raises(ManifestError, match=r"line 2: tasks: unknown task\(s\) \['ocr'\]"):
        load_manifest(str(manifest))


def test_cli_lists_come_from_the_registry() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    eval_task = next(a for a in commands["eval"]._actions if a.dest == "task")
    search_task = next(a for a in commands["search"]._actions if a.dest == "task")
    assert tuple(eval_task.choices) == benchmark_task_names()
    assert search_task.choices is None  # checked against the registry when given (see the CLI test below)
    build_tasks = next(a for a in commands["build"]._actions if a.dest == "tasks")
    assert ",".join(task_names()) in build_tasks.help


def test_adding_a_task_is_one_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module with a TASK, placed in the package, is a task everywhere without other edits."""
    (tmp_path / "shout.py").write_text(textwrap.dedent('''
        from tasks.base import Task

        class ShoutTask(Task):
            name = "shout"
            order = 60
            max_new_tokens = 8

            def prompt(self, clip, target):
                return "Describe the video loudly."

            def rows(self, run, prompt, text):
                return [run.segment_row(prompt.clip, self.name, prompt.prompt, text.upper(), text)]

        TASK = ShoutTask()
    '''))
    monkeypatch.setattr(tasks, "__path__", [*tasks.__path__, str(tmp_path)])
    tasks.all_tasks.cache_clear()
    try:
        assert task_names()[-1] == "shout" and "shout" not in benchmark_task_names()
        assert BuildConfig(input="in", output="out", model=ModelConfig(model="m"), tasks=("shout",)).tasks == ("shout",)
        check_task_names(["caption", "shout"])  # manifests, configs and search --task accept it
    finally:
        tasks.all_tasks.cache_clear()
        sys.modules.pop("tasks.shout", None)


def test_benchmark_reading_column_reads_as_null_in_older_indexes() -> None:
    assert SEGMENTS_SCHEMA.field("benchmark_reading_ok").type == pa.bool_()
    old_names = [name for name in SEGMENTS_SCHEMA.names if name not in ("benchmark_reading_ok", "embedding")]
    old = pa.table({name: pa.nulls(2, SEGMENTS_SCHEMA.field(name).type) for name in old_names})
    read = conform_segments(old)
    assert read.column("benchmark_reading_ok").to_pylist() == [None, None]


def test_search_checks_its_task_filter_against_the_registry(tmp_path) -> None:  # noqa: ANN001
    import subprocess

    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "search", "--index", str(tmp_path), "cut",
                           "--task", "ocr"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--task: unknown task(s) ['ocr']; known: caption, fgqa" in done.stderr
