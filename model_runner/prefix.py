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

    prefix_ids: torch.Tensor  # (num_clips, P): the same tokens for every clip
    pixel_values_videos: torch.Tensor  # (num_clips, frames, 3, H, W)
    clip_of: torch.Tensor  # (num_prompts,): the clip row each prompt continues from
    input_ids: torch.Tensor  # (num_prompts, P + S): prefix | left padding | suffix
    attention_mask: torch.Tensor  # (num_prompts, P + S): 0 on the padding only


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
    prefix_len = common_prefix_length(ids)
    if any(video_id in row[prefix_len:] for row in ids):
        raise PrefixMismatch("the video tokens are not all in the shared prefix")
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
    )


def prefill_prefix(batch: SharedBatch, model: LoadedPlm) -> DynamicCache:
    """Encode each distinct clip once and prefill its prefix; one cache row per clip."""
    plm = model.model
    cache = DynamicCache(config=plm.config.get_text_config())
    pixels = batch.pixel_values_videos.to(model.device, dtype=plm.dtype)
    with torch.inference_mode():
        # logits_to_keep=1: the prefix's logits are never used (its last token is not the prompt's last).
        plm(input_ids=batch.prefix_ids.to(model.device), pixel_values_videos=pixels, past_key_values=cache,
            use_cache=True, logits_to_keep=1)
    return cache


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


def run_shared(items: Sequence[ClipPrompt], model: LoadedPlm, max_new_tokens: int,
               stopping: Callable[[int], list[StoppingCriteria]] | None = None,
               **generate_kwargs: Any) -> tuple[Any, int]:
    """Generate greedily for prompts about one or a few clips, sharing each clip's prefix.

    Every prompt must have frames of one shape. Prompts about the same clip share its vision
    encoding and prefix prefill; all prompts then decode in one batch. ``stopping(width)``, if
    given, returns stopping criteria for prompts ``width`` tokens wide (per-row budgets, the
    runaway guard). Returns ``generate``'s output and the width of the prompt part of its sequences.
    """
    batch = prepare(items, model)
    cache = prefill_prefix(batch, model)
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
    return output, input_ids.shape[1]


def generate_shared_tokens(items: Sequence[ClipPrompt], model: LoadedPlm, max_new_tokens: int,
                           runaway: RunawaySettings | None = None) -> list[list[int]]:
    """Each prompt's greedy answer as new token ids, cut after the first end-of-sequence token.

    Prompts may have different ``max_new_tokens`` (a caption and short questions about one clip):
    they still share the clip's prefix, the batch runs to the largest budget (at most
    ``max_new_tokens``) and each row is cut at its own. ``runaway`` turns the loop guard on.
    """
    tokens, _ = generate_shared_rows(items, model, max_new_tokens, runaway)
    return tokens


def generate_shared_rows(items: Sequence[ClipPrompt], model: LoadedPlm, max_new_tokens: int,
                         runaway: RunawaySettings | None = None) -> tuple[list[list[int]], list[int]]:
    """Like ``generate_shared_tokens``, also returning the rows the runaway guard ended."""
    budgets = [min(item.max_new_tokens, max_new_tokens) for item in items]
    longest = max(budgets)
    criteria: list = []

    def stopping(width: int) -> list[StoppingCriteria]:
        criteria.extend(criteria_for(width, budgets, longest, runaway))
        return list(criteria)

    output, width = run_shared(items, model, longest, stopping)
    return cut_rows(output[:, width:].tolist(), criteria, eos_ids_of(model))
