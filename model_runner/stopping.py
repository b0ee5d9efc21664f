"""Per-row stopping for batched greedy generation: each row's own token budget, and a runaway guard.

Both are ``transformers`` stopping criteria, so ``generate`` stays in charge of decoding: a row
that stops is finished for ``generate`` (it then only pads) while the others go on. Each
criterion also records, per row, how many new tokens the row had when it stopped, so the caller
can cut the row there (``cut_rows``); padding after the stop never reaches the text.

- ``RowBudgets`` lets prompts with different ``max_new_tokens`` (a caption and short questions
  about one clip) share one batch and one prefix: the batch runs to the largest budget and each
  row ends at its own. A row's tokens up to its budget are those it gets alone, because greedy
  decoding of one row never looks at another.
- ``RunawayGuard`` ends a row once its output is stuck in a loop. PLM is reported to loop on
  detailed-caption prompts (facebookresearch/perception_models issue #44, at 8B), and a looping
  row burns its whole token budget while the rest of its batch waits. A row is looping when its
  newest tokens repeat one n-gram (period 1 to ``max_period`` tokens) back to back, covering at
  least ``min_repeats`` periods and ``min_tokens`` tokens. An output that never does this is not
  changed by the guard at all: the guard only ever stops a row at the step the loop is complete.
"""

from __future__ import annotations

import torchvision_shim  # noqa: F401  (first: torchvision and transformers need it, see torchvision_shim.py)

# isort: split

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

__all__ = ["RowBudgets", "RunawayGuard", "RunawaySettings", "StoppingCriteriaList", "criteria_for", "cut_rows"]


class _RecordingCriterion(StoppingCriteria):
    """A stopping criterion that remembers how many new tokens each row had when it first stopped."""

    def __init__(self, prompt_width: int) -> None:
        self.prompt_width = prompt_width
        self.stopped_at: dict[int, int] = {}

    def _record(self, done: torch.Tensor, generated: int) -> torch.Tensor:
        for row in torch.nonzero(done, as_tuple=False).flatten().tolist():
            self.stopped_at.setdefault(int(row), generated)
        return done


class RowBudgets(_RecordingCriterion):
    """Stops row ``i`` once it has ``budgets[i]`` new tokens (``generate`` runs to the largest)."""

    def __init__(self, prompt_width: int, budgets: Sequence[int]) -> None:
        super().__init__(prompt_width)
        if not budgets or min(budgets) < 1:
            raise ValueError(f"every row needs a token budget of at least 1, got {list(budgets)}")
        self.budgets = list(budgets)
        self._budgets: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object) -> torch.BoolTensor:
        if self._budgets is None or self._budgets.device != input_ids.device:
            self._budgets = torch.tensor(self.budgets, device=input_ids.device)
        generated = input_ids.shape[1] - self.prompt_width
        return self._record(generated >= self._budgets, generated)


@dataclass(frozen=True)
class RunawaySettings:
    """What counts as a loop: an n-gram of 1..``max_period`` tokens repeated back to back,
    at least ``min_repeats`` times and over at least ``min_tokens`` tokens."""

    max_period: int = 64
    min_repeats: int = 4
    min_tokens: int = 32

    def __post_init__(self) -> None:
        if self.max_period < 1 or self.min_repeats < 2 or self.min_tokens < 2:
            raise ValueError(f"runaway guard needs max_period >= 1, min_repeats >= 2, min_tokens >= 2; got {self}")

    def span(self, period: int) -> int:
        """How many tokens of period ``period`` make a loop."""
        return max(self.min_repeats * period, self.min_tokens)


class RunawayGuard(_RecordingCriterion):
    """Stops a row whose newest tokens repeat an n-gram loop (see the module docstring).

    Cheap per step: for each period ``p`` it keeps the length of the current run of new tokens
    equal to the token ``p`` before them (a run of ``r`` such tokens means the last ``r + p``
    tokens have period ``p``), updated with one comparison of the newest token against the
    ``max_period`` tokens before it. Only new tokens count: the prompt never starts a loop.
    """

    def __init__(self, prompt_width: int, settings: RunawaySettings | None = None) -> None:
        super().__init__(prompt_width)
        self.settings = settings or RunawaySettings()
        periods = torch.arange(1, self.settings.max_period + 1)
        self._periods = periods
        # A loop of period p: the last span(p) tokens have period p, i.e. a run of span(p) - p.
        self._needed = torch.tensor([self.settings.span(int(p)) - int(p) for p in periods])
        self._runs: torch.Tensor | None = None
        self._seen = 0  # new tokens already folded into the runs

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.prompt_width
        device = input_ids.device
        if self._runs is None or self._runs.device != device:
            self._runs = torch.zeros((input_ids.shape[0], self.settings.max_period), dtype=torch.long, device=device)
            self._periods = self._periods.to(device)
            self._needed = self._needed.to(device)
        # Fold in every new token not yet seen (one a step in generate; more if called late).
        for index in range(self._seen, generated):
            position = self.prompt_width + index
            lookback = min(self.settings.max_period, position)
            newest = input_ids[:, position:position + 1]
            # previous[:, p - 1] is the token p before the newest one.
            previous = input_ids[:, position - lookback:position].flip(1)
            equal = torch.zeros_like(self._runs, dtype=torch.bool)
            # A period may only look back over new tokens.
            equal[:, :lookback] = previous == newest
            equal &= self._periods <= index
            self._runs = (self._runs + 1) * equal
        self._seen = max(self._seen, generated)
        done = (self._runs >= self._needed).any(dim=1)
        return self._record(done, generated)


def cut_rows(rows: Sequence[Sequence[int]], criteria: Sequence[_RecordingCriterion],
             eos_ids: set[int]) -> tuple[list[list[int]], list[int]]:
    """Each row's new tokens, cut where a criterion stopped it or after its first end-of-sequence token.

    Also returns the rows a ``RunawayGuard`` ended (before their budget and before any end of sequence;
    a finished row's padding never counts as a loop).
    """
    out: list[list[int]] = []
    runaway: list[int] = []
    for index, row in enumerate(rows):
        stops = [c.stopped_at[index] for c in criteria if index in c.stopped_at]
        limit = min(stops) if stops else len(row)
        kept: list[int] = []
        ended = False
        for token in list(row)[:limit]:
            kept.append(int(token))
            if int(token) in eos_ids:
                ended = True
                break
        guarded = [c.stopped_at[index] for c in criteria if isinstance(c, RunawayGuard) and index in c.stopped_at]
        if not ended and guarded and min(guarded) == limit:
            runaway.append(index)
        out.append(kept)
    return out, runaway


def criteria_for(prompt_width: int, budgets: Sequence[int], max_new_tokens: int,
                 runaway: RunawaySettings | None) -> list[_RecordingCriterion]:
    """The criteria a batch needs: row budgets where rows differ from ``max_new_tokens``, and the guard if on.

    With equal budgets and no guard this is empty, and generation is exactly the plain call.
    """
    criteria: list[_RecordingCriterion] = []
    if any(b < max_new_tokens for b in budgets):
        criteria.append(RowBudgets(prompt_width, budgets))
    if runaway is not None:
        criteria.append(RunawayGuard(prompt_width, runaway))
    return criteria
