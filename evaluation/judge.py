"""LLM judges for PLM-VideoBench's open-ended tasks (RCap, RDCap, SGQA).

The judge prompts and the reading of the judge's reply follow lmms-eval
(``lmms_eval/tasks/plm_videobench/eval_utils.py``: ``get_caption_judge_prompt``,
``get_sgqa_judge_prompt``, ``call_judge_with_retry``; ``rcap/rcap_utils.py`` and
``sgqa/sgqa_utils.py`` for parsing). The benchmark's judge is Llama-3.3-70B-Instruct behind an
OpenAI-compatible API, called with temperature 0 and max_tokens 256.

``OpenAICompatibleJudge`` talks to such an API with the standard library only. ``ExactMatchJudge``
is an offline stand-in for tests: it compares strings and is not an LLM judge.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]

# The judge prompts are the benchmark's text, reproduced exactly, quirks included: the SGQA
# system prompt runs "task:------##INSTRUCTIONS: - Focus" together, and its user prompt has a
# double space in "is  a string", no space after "STRING." and a stray "}" in the example.
_CAPTION_SYSTEM = (
    "Your task is to score a predicted caption from a model for how similar it is to the ground truth "
    "caption, providing a single integer score between 0-10 indicating the similarity and an "
    "explanation. Focus on whether the information in the ground truth caption is present and "
    "accurately represented in the predicted caption. A score of 10 indicates that the predicted "
    "caption accurately represents all the information present in the ground truth caption. Subtract "
    "points for missing and inaccurate information, with lower scores for more significant errors. "
    "Do not penalize extra information in the predicted caption unless it contradicts the ground "
    "truth caption. Do not penalize minor differences in phrasing or word choice. Respond in the "
    'following JSON format: {"score": <int>, "explanation": "<str>"} where score is between 0-10 and '
    "explanation is a short sentence."
)
_CAPTION_USER = (
    "Please score the following predicted caption. Respond with only the JSON.\n"
    "Predicted caption: {pred}\nGround truth caption: {gt}\n\n"
)
_SGQA_SYSTEM = (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
    "question-answer pairs. Your task is to compare the predicted answer with the correct answer and "
    "determine if they match meaningfully. Here's how you can accomplish the task:------##INSTRUCTIONS: "
    "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Evaluate the correctness of the prediction compared to the answer."
)
_SGQA_USER = (
    "Please evaluate the following video-based question-answer pair:\n\n"
    "Question: {question}\nCorrect Answer: {target}\nPredicted Answer: {pred}\n\n"
    "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 "
    "and 5, with 5 indicating the highest meaningful match. Please generate the response in the form "
    "of a Python dictionary string with keys 'pred' and 'score', where value of 'pred' is  a string of "
    "'yes' or 'no' and value of 'score' is in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER OUTPUT TEXT "
    "OR EXPLANATION. Only provide the Python dictionary string. For example, your response should look "
    'like this: {{"pred": "yes", "score": 4.8}}}}.'
)


def caption_judge_messages(gt: str, pred: str) -> Messages:
    """The RCap/RDCap judge conversation: score ``pred`` against ``gt`` from 0 to 10, as JSON."""
    return [{"role": "system", "content": _CAPTION_SYSTEM},
            {"role": "user", "content": _CAPTION_USER.format(pred=pred, gt=gt)}]


def sgqa_judge_messages(question: str, pred: str, target: str) -> Messages:
    """The SGQA judge conversation: yes/no plus a 0-5 score for ``pred`` against ``target``."""
    return [{"role": "system", "content": _SGQA_SYSTEM},
            {"role": "user", "content": _SGQA_USER.format(question=question, target=target, pred=pred)}]


@dataclass(frozen=True)
class CaptionJudgement:
    """A caption score from 0 to 10; an unreadable reply scores 0 with ``parsed`` False."""

    score: float
    explanation: str
    parsed: bool
    raw: str


@dataclass(frozen=True)
class SgqaJudgement:
    """Whether an SGQA answer is correct, and the judge's 0-5 score when it gave one."""

    correct: bool
    score: float | None
    parsed: bool
    raw: str


def parse_caption_judgement(reply: str) -> CaptionJudgement:
    """Read a caption judge's reply as lmms-eval does: strict JSON, or score 0 if that fails.

    lmms-eval calls ``json.loads`` on the whole reply, so a reply wrapped in prose or a code
    fence scores 0 there; this keeps that rule. A reply missing "score" also scores 0 here.
    """
    try:
        data = json.loads(reply)
        score = float(data["score"])
        explanation = str(data.get("explanation", ""))
    except (ValueError, TypeError, KeyError, AttributeError):
        return CaptionJudgement(score=0.0, explanation="N/A", parsed=False, raw=reply)
    return CaptionJudgement(score=score, explanation=explanation, parsed=True, raw=reply)


def parse_sgqa_judgement(reply: str) -> SgqaJudgement:
    """Read an SGQA judge's reply as lmms-eval does.

    Strict JSON with ``"pred"`` (correct only if exactly "yes"); when the reply is not a JSON
    object, it is correct if "yes" or "Yes" appears anywhere in it.
    """
    try:
        data = json.loads(reply)
        if not isinstance(data, dict) or "pred" not in data:
            raise ValueError("not a judgement object")
    except ValueError:
        return SgqaJudgement(correct="yes" in reply or "Yes" in reply, score=None, parsed=False, raw=reply)
    score = data.get("score")
    try:
        score = float(score) if score is not None else None
    except (TypeError, ValueError):
        score = None
    return SgqaJudgement(correct=data["pred"] == "yes", score=score, parsed=True, raw=reply)


class Judge(Protocol):
    """What the evaluation needs from a judge."""

    name: str

    def score_caption(self, gt: str, pred: str) -> CaptionJudgement:
        """Score a predicted caption against the ground truth, 0 to 10."""
        ...

    def judge_sgqa(self, question: str, pred: str, target: str) -> SgqaJudgement:
        """Decide whether an SGQA answer matches the correct one."""
        ...


def caption_scorer(judge: Judge) -> Callable[[str, str], float]:
    """``(gt, pred) -> score in [0, 1]`` for ``metrics.soda_c``: the judge's score divided by 10."""
    return lambda gt, pred: judge.score_caption(gt, pred).score / 10


class JudgeError(RuntimeError):
    """The judge API could not be reached or gave no usable reply."""


_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class OpenAICompatibleJudge:
    """A judge behind an OpenAI-compatible chat-completions API, using only ``urllib``.

    ``base_url`` is what the OpenAI client would take, such as ``https://host/v1``; requests go to
    ``<base_url>/chat/completions``, and a bare ``http://host:port`` gets ``/v1`` added. The API key
    is read from the environment variable ``api_key_env`` (None for servers without auth) and is
    never logged or shown. Rate limits (429), 5xx replies and connection errors are retried with
    exponential backoff, ``base_delay_s * 2**attempt``.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY", *,
                 temperature: float = 0.0, max_tokens: int = 256, timeout_s: float = 120.0,
                 max_retries: int = 5, base_delay_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        path = parts.path.rstrip("/") or "/v1"
        self.url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"{path}/chat/completions", "", ""))
        self.model = model
        self.name = f"openai-compatible:{model}"
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.base_delay_s = base_delay_s
        self._sleep = sleep
        self._api_key: str | None = None
        if api_key_env is not None:
            key = os.environ.get(api_key_env)
            if not key:
                raise ValueError(f"environment variable {api_key_env} holds no API key")
            self._api_key = key

    def __repr__(self) -> str:
        return f"OpenAICompatibleJudge(url={self.url!r}, model={self.model!r})"

    def chat(self, messages: Messages) -> str:
        """Send one chat-completions request and return the reply's text."""
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature,
                           "max_tokens": self.max_tokens}).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        attempt = 0
        while True:
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                break
            except urllib.error.HTTPError as err:
                reason = f"HTTP {err.code}"
                retry = err.code in _RETRY_STATUSES
            except urllib.error.URLError as err:
                reason = f"connection failed: {err.reason}"
                retry = True
            except (TimeoutError, ConnectionError) as err:
                reason = f"connection failed: {type(err).__name__}"
                retry = True
            except ValueError as err:
                raise JudgeError(f"judge at {self.url} sent a reply that is not JSON: {err}") from None
            if not retry or attempt >= self.max_retries:
                raise JudgeError(f"judge at {self.url} failed after {attempt + 1} attempt(s): {reason}")
            delay = self.base_delay_s * 2 ** attempt
            attempt += 1
            log.warning("judge at %s: %s; retry %d/%d in %.1fs", self.url, reason, attempt,
                        self.max_retries, delay)
            self._sleep(delay)
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise JudgeError(f"judge at {self.url} sent no choices[0].message.content") from None
        if not isinstance(content, str):
            raise JudgeError(f"judge at {self.url} sent non-text content")
        return content

    def score_caption(self, gt: str, pred: str) -> CaptionJudgement:
        """Score ``pred`` against ``gt`` from 0 to 10 with the benchmark's caption prompt."""
        return parse_caption_judgement(self.chat(caption_judge_messages(gt, pred)))

    def judge_sgqa(self, question: str, pred: str, target: str) -> SgqaJudgement:
        """Judge an SGQA answer with the benchmark's prompt."""
        return parse_sgqa_judgement(self.chat(sgqa_judge_messages(question, pred, target)))


def _normalise_text(text: str) -> str:
    return " ".join(text.split()).casefold().rstrip(".!?")


class ExactMatchJudge:
    """Offline stand-in for tests: exact string match after normalising case and spaces.

    NOT an LLM judge and no measure of caption quality: a caption scores 10 only if it equals the
    ground truth (case, spacing and a final "." aside) and 0 otherwise; SGQA likewise.
    """

    name = "exact-match-stand-in (not an LLM judge)"

    def score_caption(self, gt: str, pred: str) -> CaptionJudgement:
        """10 for an exact match, else 0."""
        same = _normalise_text(gt) == _normalise_text(pred)
        verdict = "equal" if same else "differ"
        return CaptionJudgement(score=10.0 if same else 0.0, parsed=True, raw="",
                                explanation=f"exact-match stand-in, not an LLM judge: texts {verdict}")

    def judge_sgqa(self, question: str, pred: str, target: str) -> SgqaJudgement:
        """Correct (score 5) only for an exact match, else incorrect (score 0)."""
        same = _normalise_text(target) == _normalise_text(pred)
        return SgqaJudgement(correct=same, score=5.0 if same else 0.0, parsed=True,
                             raw="exact-match stand-in, not an LLM judge")

