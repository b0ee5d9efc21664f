"""GPU: PLM-1B and PLM-3B at their real sizes, random weights, no download.

The models are built from the published architectures (Llama-3.2-1B/3B text models, the PE-Core
L/14 vision tower at 448 px with its CLS token and 23 layers, a 2-layer projector and 2x2
pooling, vocabulary 128256), in bf16 with SDPA on CUDA. Every generation is forced to a fixed
number of new tokens (min_new_tokens = max_new_tokens), so runs are comparable.

Figures:

* model only: clips/s and output tokens/s at batch sizes 1, 4, 8 and 16 (one 32-frame clip and
  one prompt per row), against batch size 1 as the baseline;
* prefix sharing at PLM-1B size: 8 questions about one clip with sharing against 1 question;
* the build's flow without Beam (``bench.flow``: probe, plan, killable decode processes decoding
  ahead, prompts, ``PlmRunner`` in fixed batches of 15 rows, three whole clips) over generated 1080p h264 videos,
  30 s clips with one caption and 4 questions each, with one decode process (one Beam worker
  thread's share) and with all cores but two: the GPU busy fraction sampled with ``nvidia-smi``,
  the share of wall time in the model call, and video-hours per GPU-hour (indexed video seconds
  over wall seconds of the run);
* the full Beam build (``run_build`` on FnApiRunner) over the same videos, where Beam is installed
  (the lent GPU machine has none, and no room to carry it).

Without CUDA every figure is a "not run: no CUDA" entry; ``--dry`` runs every step on CPU with
shrunk models instead (checked by ``tests/bench/test_gpu_dry.py`` with Beam hidden, as on the device).
"""

from __future__ import annotations

import torchvision_shim  # noqa: F401  (first: torchvision and transformers need it, see torchvision_shim.py)

# isort: split

import os
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any

from bench.common import Context, Figure, Stat, ffmpeg_encode, paired, skipped

NAME = "gpu"
BATCH_SIZES = (1, 4, 8, 16)
NEW_TOKENS = 64
NUM_FRAMES = 32
CAPTION_TOKENS = 128  # the caption's max_new_tokens in the pipeline run (questions: sgqa's own 16)
QUESTIONS = ("What is the person holding?", "Where does this take place?", "What happens at the end?",
             "How many people are visible?")
BUSY_TARGET = 0.8
FLOW_BATCH = 15  # three whole clips of a caption and 4 questions: no clip split across batches

# Llama-3.2 text models as published (Perception-LM-1B/3B's language models).
TEXT = {
    "PLM-1B": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
               "num_key_value_heads": 8, "head_dim": 64},
    "PLM-3B": {"hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24,
               "num_key_value_heads": 8, "head_dim": 128},
}
# PE-Core L/14 as PLM-1B/3B use it: width 1024, 23 layers, 448 px, CLS token kept by the tower.
VISION_ARGS = {"embed_dim": 1024, "depth": 23, "num_heads": 16, "img_size": (448, 448), "global_pool": "",
               "use_post_transformer_norm": False, "ref_feat_shape": (32, 32)}
VOCAB = 128256
ROPE_SCALING = {"rope_type": "llama3", "factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192}


def plm_config(name: str, image_token_id: int = 128002, video_token_id: int = 128003,
               smoke: bool = False) -> Any:
    """The PerceptionLMConfig of a real-size PLM (``smoke``: a shrunk one, to check this code on CPU)."""
    from transformers import LlamaConfig, PerceptionLMConfig, TimmWrapperConfig

    text = dict(TEXT[name])
    vision = dict(VISION_ARGS)
    if smoke:
        text.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16)
        vision.update(embed_dim=32, depth=1, num_heads=2)
    # As facebook/Perception-LM-1B's config.json publishes it (max positions 11520, llama3 RoPE scaling).
    text_config = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=11520, rms_norm_eps=1e-5,
                              rope_theta=500000.0, rope_scaling=ROPE_SCALING, tie_word_embeddings=True, bos_token_id=128000,
                              eos_token_id=[128001, 128009], pad_token_id=128001, **text)
    vision_config = TimmWrapperConfig(architecture="vit_pe_core_large_patch14_336", num_labels=0,
                                      model_args=vision)
    return PerceptionLMConfig(text_config=text_config, vision_config=vision_config, projector_pooling_ratio=2,
                              vision_use_cls_token=True, image_token_id=image_token_id,
                              video_token_id=video_token_id)


def build_model(config: Any, device: str) -> Any:
    """Random weights, built directly on ``device`` in bf16 (fp32 on CPU)."""
    import torch
    from transformers import PerceptionLMForConditionalGeneration

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    config._attn_implementation = "sdpa"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = PerceptionLMForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(device=device, dtype=dtype).eval()


def synthetic_batch(config: Any, batch: int, device: str, dtype: Any, frames: int = NUM_FRAMES) -> dict[str, Any]:
    """A batch of templated-looking prompts (system, 256 video tokens a frame, a question) and random frames."""
    import torch

    generator = torch.Generator().manual_seed(0)
    tokens_per_frame = (448 // 14 // 2) ** 2
    head = torch.randint(1000, 120000, (60,), generator=generator)
    tail = torch.randint(1000, 120000, (25,), generator=generator)
    video = torch.full((frames * tokens_per_frame,), config.video_token_id)
    row = torch.cat([torch.tensor([128000]), head, video, tail])
    return {"input_ids": row.repeat(batch, 1).to(device),
            "attention_mask": torch.ones(batch, row.numel(), dtype=torch.long, device=device),
            "pixel_values_videos": torch.randn(batch, frames, 3, 448, 448, generator=generator).to(device, dtype)}


def generation_rate(model: Any, inputs: dict[str, Any], new_tokens: int, device: str) -> float:
    """Seconds of one forced-length greedy generation."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    if device == "cuda":
        torch.cuda.synchronize()
    took = time.perf_counter() - start
    assert out.shape[1] == inputs["input_ids"].shape[1] + new_tokens
    return took


def batch_figures(name: str, model: Any, config: Any, ctx: Context, device: str, frames: int) -> list[Figure]:
    """Clips/s and output tokens/s per batch size, each against batch size 1 in the same run."""
    import torch

    dtype = next(model.parameters()).dtype
    one = synthetic_batch(config, 1, device, dtype, frames)
    figures = []
    for size in BATCH_SIZES:
        inputs = synthetic_batch(config, size, device, dtype, frames)
        try:
            cand, base, ratios = paired(lambda i=inputs: generation_rate(model, i, NEW_TOKENS, device),
                                        lambda: generation_rate(model, one, NEW_TOKENS, device), ctx.repeats)
        except torch.OutOfMemoryError as exc:
            figures.append(skipped(NAME, f"{name} batch {size}", f"out of memory ({exc})"))
            torch.cuda.empty_cache()
            continue
        clips = Stat.of([size / t for t in cand])
        per_clip = Stat.of([(size / c) / (1 / b) for c, b in zip(cand, base, strict=True)])
        figures.append(Figure(
            benchmark=NAME, name=f"{name} batch {size}: clips/s ({frames} frames, {NEW_TOKENS} new tokens)",
            unit="clips/s", value=clips, baseline_name="batch 1, clips/s",
            baseline=Stat.of([1 / b for b in base]), ratio=per_clip,
            note=f"output tokens/s {Stat.of([size * NEW_TOKENS / t for t in cand]).text(0)}",
            extra={"seconds": cand, "batch1_seconds": base, "ratios_time": ratios}))
    return figures


def sharing_figure(model: Any, config: Any, ctx: Context, device: str, frames: int) -> Figure:
    """8 questions with a shared prefix against 1 question, at this model's size (model time only)."""
    import torch
    from transformers import DynamicCache

    dtype = next(model.parameters()).dtype
    one = synthetic_batch(config, 1, device, dtype, frames)
    prefix = one["input_ids"][:, :-25]
    suffixes = [torch.randint(1000, 120000, (n,)) for n in (12, 18, 25, 31, 40, 47, 55, 63)]
    width = max(s.numel() for s in suffixes)

    def shared() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        cache = DynamicCache(config=config.get_text_config())
        with torch.inference_mode():
            model(input_ids=prefix, pixel_values_videos=one["pixel_values_videos"], past_key_values=cache,
                  use_cache=True, logits_to_keep=1)
            cache.batch_select_indices(torch.zeros(8, dtype=torch.long, device=device))
            rows = torch.stack([torch.cat([prefix[0], torch.full((width - s.numel(),), 128001, device=device),
                                           s.to(device)]) for s in suffixes])
            mask = torch.stack([torch.cat([torch.ones(prefix.shape[1], dtype=torch.long),
                                           torch.zeros(width - s.numel(), dtype=torch.long),
                                           torch.ones(s.numel(), dtype=torch.long)]) for s in suffixes]).to(device)
            model.generate(input_ids=rows, attention_mask=mask, past_key_values=cache, max_new_tokens=NEW_TOKENS,
                           min_new_tokens=NEW_TOKENS, do_sample=False)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    cand, base, ratios = paired(shared, lambda: generation_rate(model, one, NEW_TOKENS, device), ctx.repeats)
    ratio = Stat.of(ratios)
    return Figure(benchmark=NAME, name=f"PLM-1B: 8 questions, shared prefix ({NEW_TOKENS} new tokens)", unit="s",
                  value=Stat.of(cand), baseline_name="1 question alone, s", baseline=Stat.of(base), ratio=ratio,
                  target="<= 1.5x", met=ratio.median <= 1.5, note="model time only (no processor)")


class BusySampler:
    """GPU utilisation sampled by ``nvidia-smi`` every 250 ms while it runs."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.samples: list[float] = []
        self._process: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> BusySampler:
        if not self.enabled:
            return self
        self._process = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "250", "-i", "0"],
            stdout=subprocess.PIPE, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            try:
                self.samples.append(float(line.strip()) / 100.0)
            except ValueError:
                continue

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=2)


def save_checkpoint(name: str, folder: str, device: str, ctx: Context, smoke: bool = False) -> str:
    """A loadable real-size random PLM checkpoint: the tiny model's processor, the real architecture.

    The tiny model's tokenizer (a few hundred tokens) drives prompts and decoding; the model keeps
    the real 128256-token vocabulary, so every cost is the real one. ``min_new_tokens`` is set very
    high in its generation config, so every answer runs to its ``max_new_tokens`` (forced length).
    """
    from transformers import AutoProcessor, GenerationConfig

    from model_runner.tiny import build_tiny_plm

    # The tiny model straight from model_runner (no Beam import: the device machine has no Beam).
    tiny = os.path.join(ctx.cache_dir, "tiny-plm")
    if not os.path.exists(os.path.join(tiny, "config.json")):
        build_tiny_plm(tiny)
    processor = AutoProcessor.from_pretrained(tiny)
    tokenizer = processor.tokenizer
    config = plm_config(name, tokenizer.image_token_id, tokenizer.video_token_id, smoke=smoke)
    model = build_model(config, device)
    model.generation_config = GenerationConfig(do_sample=False, bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=[tokenizer.pad_token_id, tokenizer.eos_token_id],
                                               pad_token_id=tokenizer.pad_token_id, min_new_tokens=100000)
    path = os.path.join(folder, name)
    model.save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)
    del model
    return path


def missing_modules(*names: str) -> list[str]:
    """Those of ``names`` that cannot be imported here."""
    import importlib.util

    def installed(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    return [name for name in names if not installed(name)]


def pipeline_videos(ctx: Context, smoke: bool, distinct: bool = False) -> tuple[list[str], int]:
    """Generated 1080p h264 videos (cached) and their length in seconds.

    The flow gets one encoded video linked under several names (encoding 1080p takes the device's
    minutes; decoding a copy costs what decoding another video does); the Beam build, which would
    skip identical content, gets ``distinct`` videos.
    """
    count, seconds = (1, 30) if smoke else (8, 120) if ctx.quick else (16, 120)
    if distinct:
        count = min(count, 4)
    folder = os.path.join(ctx.cache_dir, "gpu-videos-distinct" if distinct else "gpu-videos")
    paths = []
    for index in range(count):
        path = os.path.join(folder, f"v{index}-{seconds}s.mp4")
        if distinct or index == 0:
            ffmpeg_encode(path, f"testsrc2=size=1920x1080:rate=30,hue=H={index}", seconds, "libx264",
                          ["-preset", "veryfast"])
        elif not os.path.exists(path):
            os.link(paths[0], path)
        paths.append(path)
    return paths, seconds


def flow_figures(ctx: Context, checkpoint: str, device: str, smoke: bool = False) -> list[Figure]:
    """The build's flow without Beam (``bench.flow``) over 1080p h264, with one decode process and with many.

    One decode process is what a single Beam worker thread has; many is the fix when CPU decoding
    starves the GPU. Each run reports the GPU busy fraction (``nvidia-smi``), the share of wall time
    the model call took, and video-hours per GPU-hour for 30 s clips with a caption and 4 questions.
    """
    missing = missing_modules("av", "pydantic")
    if missing:
        return [skipped(NAME, "build flow over 1080p h264", f"{', '.join(missing)} not installed here "
                        "(carry their wheels: make device-wheels, see the README's GPU notes)")]
    from bench.flow import default_decoders, run_flow
    from model_runner.runner import PlmRunner
    from schemas.config import ClipSpec, DecodeConfig
    from schemas.manifest import Question

    videos, seconds = pipeline_videos(ctx, smoke)
    runner = PlmRunner(checkpoint, device=device)  # no runaway guard: every answer runs to its budget
    loaded = runner.load()
    settings = {"spec": ClipSpec(mode="fixed", window_s=30.0), "decode": DecodeConfig(backend="pyav", num_frames=NUM_FRAMES),
                "tasks": ("caption", "sgqa"), "caption_tokens": CAPTION_TOKENS, "batch_size": FLOW_BATCH,
                "questions": tuple(Question(question=q) for q in QUESTIONS)}
    figures: list[Figure] = []
    for decoders in sorted({1, 2 if smoke else default_decoders()}):
        with BusySampler(enabled=device == "cuda") as sampler:
            result = run_flow(videos, runner, loaded, decoders=decoders, **settings)
        busy = sampler.samples
        busy_stat = Stat.of(busy) if busy else None
        note = (f"{result.videos} videos x {seconds} s, {result.clips} clips, {result.rows} rows in {result.batches} "
                f"batches of up to {FLOW_BATCH}, {result.failures} failed rows; model call {result.model_s:.0f} s "
                f"of {result.wall_s:.0f} s wall ({result.model_s / result.wall_s:.2f}); {os.cpu_count()} CPUs")
        figures.append(Figure(
            benchmark=NAME, name=f"build flow, {decoders} decode process{'es' if decoders > 1 else ''}: GPU busy fraction",
            unit="", value=busy_stat, target=f"> {BUSY_TARGET}",
            met=(busy_stat.median > BUSY_TARGET) if busy_stat else None,
            note=(f"nvidia-smi utilization.gpu every 250 ms, {len(busy)} samples, mean {sum(busy) / len(busy):.2f}; "
                  if busy else "no nvidia-smi samples (no GPU); ") + note))
        figures.append(Figure(
            benchmark=NAME, name=f"build flow, {decoders} decode process{'es' if decoders > 1 else ''}: "
                                 "video-hours per GPU-hour (30 s clips, caption + 4 questions)",
            unit="h/h", value=Stat.of([result.video_hours_per_hour]),
            note=f"caption {CAPTION_TOKENS} tokens + 4 sgqa questions x 16 tokens per clip; one run"))
    del loaded
    return figures


def pipeline_figures(ctx: Context, checkpoint: str, device: str, cpu_only_smoke: bool = False) -> list[Figure]:
    """The full Beam build over 1080p h264 (where Beam is installed): GPU busy fraction and video-hours per GPU-hour."""
    missing = missing_modules("apache_beam", "av", "pydantic", "tenacity")
    if missing:
        return [skipped(NAME, "full Beam build over 1080p h264", f"{', '.join(missing)} not installed here "
                        "(the build flow figures above drive the same code without Beam)")]
    from pipeline.build import run_build
    from pipeline.options import beam_options
    from schemas.config import BuildConfig, ClipSpec, DecodeConfig, ModelConfig
    from schemas.manifest import Question

    videos, seconds = pipeline_videos(ctx, cpu_only_smoke, distinct=True)
    folder = os.path.dirname(videos[0])
    count = len(videos)
    output = tempfile.mkdtemp(prefix="bench-gpu-index-")
    config = BuildConfig(input=folder, output=output, clips=ClipSpec(mode="fixed", window_s=30.0),
                         decode=DecodeConfig(backend="pyav", num_frames=NUM_FRAMES),
                         # No runaway guard: every answer runs to its budget, so the work is fixed.
                         model=ModelConfig(model=checkpoint, max_new_tokens=CAPTION_TOKENS, batch_size=FLOW_BATCH,
                                           device=device, runaway_guard=False),
                         tasks=("caption", "sgqa"), questions=tuple(Question(question=q) for q in QUESTIONS))
    try:
        with BusySampler(enabled=device == "cuda") as sampler:
            start = time.perf_counter()
            summary = run_build(config, beam_options([]), force=True)
            wall = time.perf_counter() - start
        busy = sampler.samples
    finally:
        shutil.rmtree(output, ignore_errors=True)
    video_s = count * seconds
    rate = video_s / wall  # video-hours per GPU-hour, the run owning the GPU
    busy_stat = Stat.of(busy) if busy else None
    note = (f"{count} videos x {seconds} s, {summary.line()}; {os.cpu_count()} CPUs decoding; "
            f"caption {CAPTION_TOKENS} tokens + 4 sgqa questions x 16 tokens per 30 s clip")
    return [
        Figure(benchmark=NAME, name="full Beam build over 1080p h264: GPU busy fraction", unit="",
               value=busy_stat, target=f"> {BUSY_TARGET}", met=(busy_stat.median > BUSY_TARGET) if busy_stat else None,
               note=f"nvidia-smi utilization.gpu every 250 ms, {len(busy)} samples (median [min-max]); "
                    f"mean {sum(busy) / len(busy):.2f}" if busy else "no samples"),
        Figure(benchmark=NAME, name="full Beam build: video-hours per GPU-hour (30 s clips, caption + 4 questions)",
               unit="h/h", value=Stat.of([rate]), note=note + f"; wall {wall:.0f} s, one run"),
    ]


def run(ctx: Context, smoke: bool = False) -> list[Figure]:
    """All GPU figures, or 'no CUDA' entries. ``smoke`` (``--dry``) runs shrunk models on CPU to check the code."""
    import gc

    import torch

    smoke = smoke or ctx.dry

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cuda" and not smoke:
        return [skipped(NAME, what, "no CUDA (torch.cuda.is_available() is False)")
                for what in ("PLM-1B/3B clips/s and tokens/s at batch 1, 4, 8, 16",
                             "PLM-1B prefix sharing, 8 questions vs 1",
                             "full pipeline GPU busy fraction over 1080p h264",
                             "video-hours per GPU-hour")]
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    frames = 4 if smoke else NUM_FRAMES
    figures: list[Figure] = []
    for name in ("PLM-1B", "PLM-3B"):
        config = plm_config(name, smoke=smoke)
        model = build_model(config, device)
        params = sum(p.numel() for p in model.parameters()) / 1e9
        figures.extend(batch_figures(name, model, config, ctx, device, frames))
        figures[-1].extra["parameters_billion"] = params
        if name == "PLM-1B":
            figures.append(sharing_figure(model, config, ctx, device, frames))
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    scratch = tempfile.mkdtemp(prefix="bench-gpu-ckpt-", dir=ctx.cache_dir)
    try:
        checkpoint = save_checkpoint("PLM-1B", scratch, device, ctx, smoke=smoke)
        for step in (flow_figures, pipeline_figures):
            try:
                figures.extend(step(ctx, checkpoint, device, device != "cuda"))
            except Exception as exc:  # noqa: BLE001 - report the failure, keep the other figures
                figures.append(skipped(NAME, step.__name__, f"failed: {type(exc).__name__}: {exc}"))
    except Exception as exc:  # noqa: BLE001 - report the failure, keep the model figures
        figures.append(skipped(NAME, "PLM-1B checkpoint for the pipeline runs", f"failed: {type(exc).__name__}: {exc}"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return figures
