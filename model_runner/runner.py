"""``PlmRunner``: PerceptionLM over batches of clip prompts, the one home of generation.

Beam's ``PlmModelHandler`` (``model_runner.handler``) is this plus RunInference's hooks; ``eval``
and the GPU bench (on a machine without Beam) call it directly. Nothing here imports Beam.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from model_runner.loading import LoadedPlm, load_plm
from model_runner.prefix import PrefixCarry, PrefixMismatch, eos_ids_of, generate_shared_rows, group_by_clip
from model_runner.prompts import video_conversation
from model_runner.stopping import RunawaySettings, StoppingCriteriaList, criteria_for, cut_rows
from schemas.records import ClipPrompt, InferenceFailure

log = logging.getLogger(__name__)

#: Called with the number of rows the runaway guard ended (the Beam handler counts them as a metric).
RUNAWAY_LISTENERS: list[Callable[[int], None]] = []
#: Called with the number of clips a batch continued from a prefix carried from the batch before.
CARRIED_LISTENERS: list[Callable[[int], None]] = []


def note_runaway(items: Sequence[ClipPrompt], rows: Sequence[int]) -> None:
    """Log the rows the runaway guard ended (their text is kept up to the loop) and tell the listeners."""
    for row in rows:
        item = items[row]
        log.warning("runaway guard: the %s answer for %s clip %d repeated a loop and was stopped early",
                    item.task, item.clip.uri, item.clip.clip_index)
    if rows:
        for listener in RUNAWAY_LISTENERS:
            listener(len(rows))


def batch_bytes(batch: Sequence[ClipPrompt]) -> int:
    """A batch's size in bytes without pickling it: each distinct frames array once, plus the prompt text."""
    seen: set[int] = set()
    total = 0
    for item in batch:
        if id(item.frames) not in seen:
            seen.add(id(item.frames))
            total += int(item.frames.nbytes)
        total += len(item.prompt.encode("utf-8"))
    return total


class PlmRunner:
    """Greedy generation with PerceptionLM over batches of clip prompts.

    Clips of equal frame count and frame size are batched together with left-padded prompts.
    The prompt goes through the processor's chat template, which emits BOS itself, so the
    tokenizer is told not to add another. If a batch fails (CUDA out of memory, say) it is
    retried in halves down to single clips; a clip that fails alone comes back as an
    ``InferenceFailure`` so the rest of its batch still lands.

    Several prompts in a batch about the same clip (the same frames, e.g. a caption and
    questions) share the clip's vision encoding and prefix prefill (``model_runner.prefix``)
    when ``share_prefix`` is on, whatever their ``max_new_tokens``; their answers are the same
    as when each runs alone. A clip whose prompts straddle two consecutive batches is encoded once
    too: its prefix is carried to the next batch (``model_runner.prefix.PrefixCarry``), as the
    prompts' ``prompts_on_frames`` say more are to come. ``runaway_guard`` (on in ``build``, never in ``eval``) ends a row
    whose output loops (``model_runner.stopping.RunawayGuard``); it changes no output that does not.
    """

    def __init__(self, model: str, *, device: str = "auto", torch_threads: int = 0, share_prefix: bool = True,
                 runaway_guard: RunawaySettings | None = None, carry_prefix: bool = True) -> None:
        self._model = model
        self._share_prefix = share_prefix
        self._runaway = runaway_guard
        self._device = device
        self._torch_threads = torch_threads
        # carry_prefix=False only measures what carrying saves (bench/prefix_sharing.py).
        self._carry = PrefixCarry() if share_prefix and carry_prefix else None

    def load(self) -> LoadedPlm:
        """Load the checkpoint (a folder or a hub id) onto the device."""
        loaded = load_plm(self._model, self._device, self._torch_threads)
        log.info("loaded PLM %s on %s", self._model, loaded.device)
        return loaded

    def answer(self, batch: Sequence[ClipPrompt], model: LoadedPlm) -> list[str | InferenceFailure]:
        """One answer per prompt, in order: its text, or an ``InferenceFailure`` when its row failed alone."""
        # Prompts batch by frame shape only: rows with different token budgets share a batch (and
        # a clip's prefix), each ending at its own budget (model_runner.stopping.RowBudgets).
        groups: dict[tuple, list[int]] = defaultdict(list)
        for position, item in enumerate(batch):
            groups[item.frames.shape].append(position)
        texts: dict[int, str | InferenceFailure] = {}
        continued = self._carry.continued if self._carry is not None else 0
        if self._carry is not None:
            self._carry.begin_batch()
        try:
            for positions in groups.values():
                for chosen, shared in self._split_shared(batch, positions):
                    items = [batch[p] for p in chosen]
                    for p, text in zip(chosen, self._generate_split(items, model, 1, shared), strict=True):
                        texts[p] = text
        finally:
            if self._carry is not None:
                self._carry.end_batch()
                if self._carry.continued > continued:
                    for listener in CARRIED_LISTENERS:
                        listener(self._carry.continued - continued)
        return [texts[p] for p in range(len(batch))]

    def _split_shared(self, batch: Sequence[ClipPrompt], positions: list[int]) -> list[tuple[list[int], bool]]:
        """Positions whose clip shares a prefix (several prompts here, or others in a batch before or after), and the rest."""
        if not self._share_prefix:
            return [(positions, False)]
        clip_of = group_by_clip([batch[p] for p in positions])
        sizes = Counter(clip_of)
        sharing = {c for p, c in zip(positions, clip_of, strict=True)
                   if sizes[c] > 1 or batch[p].prompts_on_frames > sizes[c]}
        shared = [p for p, c in zip(positions, clip_of, strict=True) if c in sharing]
        alone = [p for p, c in zip(positions, clip_of, strict=True) if c not in sharing]
        return [(chosen, flag) for chosen, flag in ((shared, True), (alone, False)) if chosen]

    def _generate(self, items: list[ClipPrompt], model: LoadedPlm, shared: bool) -> list[str]:
        max_new_tokens = max(item.max_new_tokens for item in items)
        # The guard and the carry travel as keywords only when in use, so subclasses overriding generate keep working.
        guard = {"runaway": self._runaway} if self._runaway is not None else {}
        if shared:
            carrying = self._carry is not None and (
                self._carry.holding or any(item.prompts_on_frames > 1 for item in items))
            carry = {"carry": self._carry} if carrying else {}
            return self.generate_shared(items, model, max_new_tokens, **guard, **carry)
        return self.generate(items, model, max_new_tokens, **guard)

    def _generate_split(self, items: list[ClipPrompt], model: LoadedPlm, attempt: int,
                        shared: bool = False) -> list[str | InferenceFailure]:
        try:
            return self._generate(items, model, shared)
        except PrefixMismatch as exc:
            log.warning("prefix sharing is not possible here (%s); generating without it", exc)
            return self._generate_split(items, model, attempt, False)
        except Exception as exc:  # noqa: BLE001 - split and retry, then report per clip
            if model.device == "cuda":
                torch.cuda.empty_cache()
            if len(items) == 1:
                log.warning("generation failed for %s clip %d: %s", items[0].clip.uri, items[0].clip.clip_index, exc)
                return [InferenceFailure(type(exc).__name__, str(exc), attempt)]
            half = len(items) // 2
            log.warning("a batch of %d failed (%s); retrying in halves", len(items), type(exc).__name__)
            return (self._generate_split(items[:half], model, attempt + 1, shared)
                    + self._generate_split(items[half:], model, attempt + 1, shared))

    @staticmethod
    def model_inputs(items: list[ClipPrompt], model: LoadedPlm) -> Any:
        """The processor's batch for ``generate``: templated, left-padded prompts and the videos, on device."""
        processor = model.processor
        texts = [processor.apply_chat_template(video_conversation(item.prompt), add_generation_prompt=True,
                                               tokenize=False) for item in items]
        videos = [torch.from_numpy(item.frames).permute(0, 3, 1, 2) for item in items]
        inputs = processor(text=texts, videos=videos, return_tensors="pt", padding=True,
                           add_special_tokens=False, do_resize=False, do_sample_frames=False)
        inputs = inputs.to(model.device)
        if "pixel_values_videos" in inputs:
            inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(model.model.dtype)
        return inputs

    @staticmethod
    def generate(items: list[ClipPrompt], model: LoadedPlm, max_new_tokens: int,
                 runaway: RunawaySettings | None = None) -> list[str]:
        """Generate one answer per clip prompt, greedily, in one batch.

        Each row stops at its own ``max_new_tokens`` (capped by ``max_new_tokens``) and, with
        ``runaway`` set, when its output loops. With equal budgets and no guard this is the
        plain ``generate`` call (what ``eval`` runs, benchmark-exact).
        """
        inputs = PlmRunner.model_inputs(items, model)
        width = inputs["input_ids"].shape[1]
        budgets = [min(item.max_new_tokens, max_new_tokens) for item in items]
        longest = max(budgets)
        criteria = criteria_for(width, budgets, longest, runaway)
        extra = {"stopping_criteria": StoppingCriteriaList(criteria)} if criteria else {}
        with torch.inference_mode():
            output = model.model.generate(**inputs, max_new_tokens=longest, do_sample=False, **extra)
        new_tokens = output[:, width:]
        if not criteria:
            return [text.strip() for text in model.processor.batch_decode(new_tokens, skip_special_tokens=True)]
        tokens, runaway_rows = cut_rows(new_tokens.tolist(), criteria, eos_ids_of(model))
        note_runaway(items, runaway_rows)
        return [text.strip() for text in model.processor.batch_decode(tokens, skip_special_tokens=True)]

    @staticmethod
    def generate_shared(items: list[ClipPrompt], model: LoadedPlm, max_new_tokens: int,
                        runaway: RunawaySettings | None = None, carry: PrefixCarry | None = None) -> list[str]:
        """Like ``generate``, encoding and prefilling each distinct clip's shared prefix once (``carry``: across batches)."""
        tokens, runaway_rows = generate_shared_rows(items, model, max_new_tokens, runaway, carry)
        note_runaway(items, runaway_rows)
        return [text.strip() for text in model.processor.batch_decode(tokens, skip_special_tokens=True)]
