"""Several prompts about one clip: encode the frames and prefill the shared prefix once.

PLM's chat template puts the video tokens before the question (system prompt, user header,
video tokens, then the question text), so every prompt about one clip starts with the same
tokens *and* the same visual features. Running each prompt alone redoes the vision tower and
the prefill of thousands of video tokens per prompt. Here the frames of each distinct clip are
processed and encoded once, the shared prefix is prefilled once per clip, and each prompt
continues from a copy of its clip's KV cache, all prompts in one batch.

Exactness. The suffixes (the question and the assistant header) differ in length. Each row
is laid out as ``prefix | padding | suffix``: padding sits *between* the cached prefix and the
suffix, and the attention mask is zero there, so no token attends to it. ``generate`` derives
position ids from the attention mask (``cumsum - 1``), so every real token keeps the position it
has when its prompt runs alone (prefix ``0..P-1``, suffix ``P..``), and every decoding step
after it as well. Greedy decoding, stopping and logits processing are ``generate``'s own, so
the answers equal, token for token, those of each prompt run alone (checked by
``tests/model_runner/test_prefix_sharing.py``).

Across batches. A batch ends where it is full, so a clip's prompts can straddle two batches.
``PrefixCarry`` keeps the prefilled prefix (one KV-cache row) of a clip whose prompts are not all
answered yet, and the next batch continues from it instead of encoding the clip again. The
prefix ends right after the video tokens, so it is the same token for token in every batch.
"""

from __future__ import annotations

import torchvision_shim  # noqa: F401  (first: torchvision and transformers need it, see torchvision_shim.py)

# isort: split

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList

from model_runner.loading import LoadedPlm
from model_runner.prompts import video_conversation
from model_runner.stopping import RunawaySettings, criteria_for, cut_rows
from schemas.records import ClipPrompt

log = logging.getLogger(__name__)


class PrefixMismatch(RuntimeError):
    """The prompts cannot share a prefix (their video tokens are not all in the common prefix)."""


def clip_key(item: ClipPrompt) -> tuple:
    """What makes two prompts' frames the same clip: video, clip, region and frame shape."""
    return (item.clip.uri, item.clip.clip_index, item.region_id, item.frames.shape)


def group_by_clip(items: Sequence[ClipPrompt]) -> list[int]:
    """For each prompt, the index of its distinct clip (same key and the same frame pixels)."""
    reps: list[np.ndarray] = []
    keys: list[tuple] = []
    out: list[int] = []
    for item in items:
        key = clip_key(item)
        found = -1
        for index, (other_key, frames) in enumerate(zip(keys, reps, strict=True)):
            if other_key == key and (frames is item.frames or np.array_equal(frames, item.frames)):
                found = index
                break
        if found < 0:
            keys.append(key)
            reps.append(item.frames)
            found = len(reps) - 1
        out.append(found)
    return out


@dataclass(frozen=True)
class SharedBatch:
    """Inputs for one shared-prefix generation, built on the host."""

    prefix_ids: torch.Tensor  # (num_clips, P): the same tokens for every clip, ending with the video tokens
    pixel_values_videos: torch.Tensor  # (num_clips, frames, 3, H, W)
    clip_of: torch.Tensor  # (num_prompts,): the clip row each prompt continues from
    input_ids: torch.Tensor  # (num_prompts, P + S): prefix | left padding | suffix
    attention_mask: torch.Tensor  # (num_prompts, P + S): 0 on the padding only
    firsts: tuple[int, ...] = ()  # per clip row, the position of its first prompt in the items


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """The length of the longest common prefix, leaving every row at least one token after it."""
    shortest = min(len(r) for r in rows)
    limit = shortest - 1
    first = rows[0]
    for index in range(limit):
        token = first[index]
        if any(r[index] != token for r in rows[1:]):
            return index
    return limit


def expand_token(row: Sequence[int], token: int, count: int) -> list[int]:
    """``row`` with each occurrence of ``token`` repeated ``count`` times."""
    out: list[int] = []
    for value in row:
        out.extend([value] * count if value == token else [value])
    return out


def prepare(items: Sequence[ClipPrompt], model: LoadedPlm) -> SharedBatch:
    """Process each distinct clip's frames once and lay out the prompts for prefix sharing.

    The video tokens are expanded exactly as the processor does it (checked against the
    processor's own output for the first prompt of each clip).
    """
    processor = model.processor
    tokenizer = processor.tokenizer
    clip_of = group_by_clip(items)
    firsts = [clip_of.index(c) for c in range(max(clip_of) + 1)]
    texts = [processor.apply_chat_template(video_conversation(item.prompt), add_generation_prompt=True,
                                           tokenize=False) for item in items]
    videos = [torch.from_numpy(items[i].frames).permute(0, 3, 1, 2) for i in firsts]
    # One processor call for the distinct clips: pixel values, and the reference token ids.
    reference = processor(text=[texts[i] for i in firsts], videos=videos, return_tensors="pt", padding=True,
                          add_special_tokens=False, do_resize=False, do_sample_frames=False)
    video_id = processor.video_token_id
    counts = (reference["input_ids"] == video_id).sum(dim=1).tolist()
    # Tokenise each text with its one video token, then repeat that token: the video token is a
    # special token, so the text around it tokenises the same either way (checked just below),
    # and tokenising thousands of repeated tokens per prompt is slow.
    ids = [expand_token(row, video_id, counts[clip_of[i]])
           for i, row in enumerate(tokenizer(texts, add_special_tokens=False)["input_ids"])]
    for row, first in enumerate(firsts):
        mask = reference["attention_mask"][row].bool()
        if reference["input_ids"][row][mask].tolist() != ids[first]:
            raise PrefixMismatch("token ids differ from the processor's; cannot share the prefix")
    # The shared prefix ends right after the video tokens: the same tokens in every batch (text the
    # prompts happen to share after them goes with each suffix), so a prefix carried from one batch
    # to the next (PrefixCarry) fits the next batch's layout.
    video_end = len(ids[0]) - ids[0][::-1].index(video_id) if video_id in ids[0] else 0
    if common_prefix_length(ids) < video_end or any(video_id in row[video_end:] for row in ids):
        raise PrefixMismatch("the video tokens are not all in the shared prefix")
    prefix_len = video_end
    suffixes = [row[prefix_len:] for row in ids]
    width = max(len(s) for s in suffixes)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prefix = ids[0][:prefix_len]
    rows = [prefix + [pad] * (width - len(s)) + s for s in suffixes]
    masks = [[1] * prefix_len + [0] * (width - len(s)) + [1] * len(s) for s in suffixes]
    return SharedBatch(
        prefix_ids=torch.tensor([prefix] * len(firsts), dtype=torch.long),
        pixel_values_videos=reference["pixel_values_videos"],
        clip_of=torch.tensor(clip_of, dtype=torch.long),
        input_ids=torch.tensor(rows, dtype=torch.long),
        attention_mask=torch.tensor(masks, dtype=torch.long),
        firsts=tuple(firsts),
    )


def prefill_prefix(batch: SharedBatch, model: LoadedPlm, clips: Sequence[int] | None = None) -> DynamicCache:
    """Encode each distinct clip once and prefill its prefix; one cache row per clip (``clips``: only those)."""
    plm = model.model
    cache = DynamicCache(config=plm.config.get_text_config())
    pixels, prefix_ids = batch.pixel_values_videos, batch.prefix_ids
    if clips is not None and list(clips) != list(range(prefix_ids.shape[0])):  # a subset: index (copies) only then
        pixels, prefix_ids = pixels[list(clips)], prefix_ids[list(clips)]
    with torch.inference_mode():
        # logits_to_keep=1: the prefix's logits are never used (its last token is not the prompt's last).
        plm(input_ids=prefix_ids.to(model.device), pixel_values_videos=pixels.to(model.device, dtype=plm.dtype),
            past_key_values=cache, use_cache=True, logits_to_keep=1)
    return cache


def cache_rows(sources: Sequence[tuple[DynamicCache, int]], model: LoadedPlm) -> DynamicCache:
    """A cache whose row ``i`` is row ``sources[i][1]`` of cache ``sources[i][0]`` (all of one length)."""
    out = DynamicCache(config=model.model.config.get_text_config())
    with torch.inference_mode():
        for layer in range(len(sources[0][0].layers)):
            keys = torch.cat([cache.layers[layer].keys[row:row + 1] for cache, row in sources])
            values = torch.cat([cache.layers[layer].values[row:row + 1] for cache, row in sources])
            out.update(keys, values, layer)
    return out


@dataclass
class _HeldPrefix:
    """One clip's prefilled prefix, kept for the rest of its prompts."""

    key: tuple
    frames: np.ndarray
    prefix: list[int]
    cache: DynamicCache  # one row
    answered: int  # the clip's prompts answered so far
    model: LoadedPlm


class PrefixCarry:
    """Keeps the prefix of a clip whose prompts straddle two batches, for the next batch.

    A batch ends where it is full (``--batch-size`` rows), so a clip with a caption and questions
    can have its first prompts in one batch and the rest in the next. Without this the clip went
    through the vision tower and the prefill again. The runner calls ``begin_batch`` and
    ``end_batch`` around each batch; a held prefix the next batch does not continue is dropped,
    so at most one clip's prefix (one KV-cache row) is held between batches.
    """

    def __init__(self) -> None:
        self._held: _HeldPrefix | None = None
        self._used = False
        self.continued = 0  # how many times a batch continued a clip from its held prefix

    def __getstate__(self) -> dict[str, Any]:
        # A pickled runner (Beam ships its handler to the workers) carries no tensors or model.
        return {"_held": None, "_used": False, "continued": 0}

    @property
    def holding(self) -> bool:
        """Whether a clip's prefix is held now."""
        return self._held is not None

    def holds(self, item: ClipPrompt) -> bool:
        """Whether ``item``'s clip is the one held (its earlier prompts went in an earlier batch)."""
        held = self._held
        return held is not None and held.key == clip_key(item) and (
            held.frames is item.frames or np.array_equal(held.frames, item.frames))

    def begin_batch(self) -> None:
        """A new batch starts."""
        self._used = False

    def end_batch(self) -> None:
        """The batch is done: drop a held prefix it neither used nor kept."""
        if not self._used:
            self._held = None

    def take(self, item: ClipPrompt, prefix: list[int], model: LoadedPlm) -> tuple[DynamicCache, int] | None:
        """The held prefix row and prompts answered so far, if it is ``item``'s clip under this model and prefix."""
        held = self._held
        if held is None or held.model is not model or held.prefix != prefix or not self.holds(item):
            return None
        self._used = True
        self.continued += 1
        return held.cache, held.answered

    def keep(self, item: ClipPrompt, prefix: list[int], row: DynamicCache, answered: int, model: LoadedPlm) -> None:
        """Hold ``row``, the prefix of ``item``'s clip (``answered`` of its prompts done), for the next batch."""
        self._held = _HeldPrefix(clip_key(item), item.frames, prefix, row, answered, model)
        self._used = True

    def drop(self) -> None:
        """Hold nothing (the held clip is finished)."""
        self._held = None


def cut_at_eos(tokens: Sequence[int], eos_ids: set[int]) -> list[int]:
    """The tokens up to and including the first end-of-sequence token (drops batch padding)."""
    out: list[int] = []
    for token in tokens:
        out.append(int(token))
        if int(token) in eos_ids:
            break
    return out


def eos_ids_of(model: LoadedPlm) -> set[int]:
    """The model's end-of-sequence ids, from its generation config."""
    eos = model.model.generation_config.eos_token_id
    if eos is None:
        eos = model.processor.tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])


def _prefixes(batch: SharedBatch, items: Sequence[ClipPrompt], model: LoadedPlm,
              carry: PrefixCarry | None) -> tuple[DynamicCache, Callable[[], None]]:
    """One prefilled prefix row per distinct clip: the carried one where it fits, the others prefilled now.

    Also returns what to call once the batch's answers are in: with ``carry``, it leaves there the
    prefix of a clip that still has prompts to come (and drops a held one that is finished).
    """
    prefix = batch.prefix_ids[0].tolist()
    reused, carried = -1, None
    if carry is not None and carry.holding:
        for clip, first in enumerate(batch.firsts):
            carried = carry.take(items[first], prefix, model)
            if carried is not None:
                reused = clip
                break
    fresh_clips = [clip for clip in range(len(batch.firsts)) if clip != reused]
    fresh = prefill_prefix(batch, model, fresh_clips) if fresh_clips else None
    if carried is None:
        cache = fresh
    else:
        rows = {clip: (fresh, index) for index, clip in enumerate(fresh_clips)}
        rows[reused] = (carried[0], 0)
        cache = cache_rows([rows[clip] for clip in range(len(batch.firsts))], model)
    if carry is None:
        return cache, lambda: None
    return cache, _unfinished_keeper(batch, items, model, carry, cache, reused, carried[1] if carried else 0)


def _unfinished_keeper(batch: SharedBatch, items: Sequence[ClipPrompt], model: LoadedPlm, carry: PrefixCarry,
                       cache: DynamicCache, reused: int, answered_before: int) -> Callable[[], None]:
    """What holds the prefix of the batch's last clip with prompts still to come (taken now, before
    generation changes the cache), or drops a held clip this batch finished."""
    clip_of = batch.clip_of.tolist()
    counts = [clip_of.count(clip) for clip in range(len(batch.firsts))]
    for position in range(len(items) - 1, -1, -1):
        clip = clip_of[position]
        answered = counts[clip] + (answered_before if clip == reused else 0)
        if answered < items[position].prompts_on_frames:
            row = cache_rows([(cache, clip)], model)
            item, prefix = items[position], batch.prefix_ids[clip].tolist()
            return lambda: carry.keep(item, prefix, row, answered, model)
    return carry.drop if reused >= 0 else (lambda: None)


def run_shared(items: Sequence[ClipPrompt], model: LoadedPlm, max_new_tokens: int,
               stopping: Callable[[int], list[StoppingCriteria]] | None = None,
               carry: PrefixCarry | None = None, **generate_kwargs: Any) -> tuple[Any, int]:
    """Generate greedily for prompts about one or a few clips, sharing each clip's prefix.

    Every prompt must have frames of one shape. Prompts about the same clip share its vision
    encoding and prefix prefill; all prompts then decode in one batch. ``stopping(width)``, if
    given, returns stopping criteria for prompts ``width`` tokens wide (per-row budgets, the
    runaway guard). With ``carry``, a clip whose earlier prompts ran in the previous batch continues
    from its held prefix, and a clip with prompts still to come leaves its prefix there.
    Returns ``generate``'s output and the width of the prompt part of its sequences.
    """
    batch = prepare(items, model)
    cache, after = _prefixes(batch, items, model, carry)
    # One copy of the clip's prefix cache per prompt (an indexed copy along the batch dimension).
    cache.batch_select_indices(batch.clip_of.to(model.device))
    input_ids = batch.input_ids.to(model.device)
    criteria = stopping(input_ids.shape[1]) if stopping is not None else []
    if criteria:
        generate_kwargs["stopping_criteria"] = StoppingCriteriaList(criteria)
    with torch.inference_mode():
        output = model.model.generate(input_ids=input_ids, attention_mask=batch.attention_mask.to(model.device),
                                      past_key_values=cache, max_new_tokens=max_new_tokens, do_sample=False,
                                      **generate_kwargs)
    after()
    return output, input_ids.shape[1]


def generate_shared_tokens(items: Sequence[ClipPrompt], model: LoadedPlm, max_new_tokens: int,
                           runaway: RunawaySettings | None = None,
                           carry: PrefixCarry | None = None) -> list[list[int]]:
    """Each prompt's greedy answer as new token ids, cut after the first end-of-sequence token.

    Prompts may have different ``max_new_tokens`` (a caption and short questions about one clip):
    they still share the clip's prefix, the batch runs to the largest budget (at most
    ``max_new_tokens``) and each row is cut at its own. ``runaway`` turns the loop guard on;
    ``carry`` carries a straddling clip's prefix between batches (``run_shared``).
    """
    tokens, _ = generate_shared_rows(items, model, max_new_tokens, runaway, carry)
    return tokens


def generate_shared_rows(items: Sequence[ClipPrompt], model: LoadedPlm, max_new_tokens: int,
                         runaway: RunawaySettings | None = None,
                         carry: PrefixCarry | None = None) -> tuple[list[list[int]], list[int]]:
    """Like ``generate_shared_tokens``, also returning the rows the runaway guard ended."""
    budgets = [min(item.max_new_tokens, max_new_tokens) for item in items]
    longest = max(budgets)
    criteria: list = []

    def stopping(width: int) -> list[StoppingCriteria]:
        criteria.extend(criteria_for(width, budgets, longest, runaway))
        return list(criteria)

    output, width = run_shared(items, model, longest, stopping, carry)
    return cut_rows(output[:, width:].tolist(), criteria, eos_ids_of(model))
