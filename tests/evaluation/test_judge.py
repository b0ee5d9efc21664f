"""The judge prompts and replies, and OpenAICompatibleJudge against a real local HTTP server."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from evaluation.judge import (
    ExactMatchJudge,
    JudgeError,
    OpenAICompatibleJudge,
    caption_judge_messages,
    parse_caption_judgement,
    parse_sgqa_judgement,
    sgqa_judge_messages,
)

SECRET = "sk-test-do-not-leak-1234"


# ------------------------------------------------------------------------------------- prompts


def test_caption_judge_messages_are_the_benchmark_text() -> None:
    messages = caption_judge_messages("A man opens the door.", "Someone opens a door.")
    assert messages == [
        {"role": "system", "content": (
            "Your task is to score a predicted caption from a model for how similar it is to the ground "
            "truth caption, providing a single integer score between 0-10 indicating the similarity and "
            "an explanation. Focus on whether the information in the ground truth caption is present and "
            "accurately represented in the predicted caption. A score of 10 indicates that the predicted "
            "caption accurately represents all the information present in the ground truth caption. "
            "Subtract points for missing and inaccurate information, with lower scores for more "
            "significant errors. Do not penalize extra information in the predicted caption unless it "
            "contradicts the ground truth caption. Do not penalize minor differences in phrasing or word "
            'choice. Respond in the following JSON format: {"score": <int>, "explanation": "<str>"} where '
            "score is between 0-10 and explanation is a short sentence.")},
        {"role": "user", "content": (
            "Please score the following predicted caption. Respond with only the JSON.\n"
            "Predicted caption: Someone opens a door.\nGround truth caption: A man opens the door.\n\n")},
    ]


def test_sgqa_judge_messages_keep_the_benchmark_quirks() -> None:
    system, user = sgqa_judge_messages("Where is my {phone}?", "On the desk", "On the table")
    assert system["content"] == (
        "You are an intelligent chatbot designed for evaluating the correctness of generative outputs "
        "for question-answer pairs. Your task is to compare the predicted answer with the correct answer "
        "and determine if they match meaningfully. Here's how you can accomplish the task:------"
        "##INSTRUCTIONS: - Focus on the meaningful match between the predicted answer and the correct "
        "answer.\n- Consider synonyms or paraphrases as valid matches.\n- Evaluate the correctness of the "
        "prediction compared to the answer.")
    assert user["content"] == (
        "Please evaluate the following video-based question-answer pair:\n\n"
        "Question: Where is my {phone}?\nCorrect Answer: On the table\nPredicted Answer: On the desk\n\n"
        "Provide your evaluation only as a yes/no and score where the score is an integer value between "
        "0 and 5, with 5 indicating the highest meaningful match. Please generate the response in the "
        "form of a Python dictionary string with keys 'pred' and 'score', where value of 'pred' is  a "
        "string of 'yes' or 'no' and value of 'score' is in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER "
        "OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. For example, your "
        'response should look like this: {"pred": "yes", "score": 4.8}}.')


# -------------------------------------------------------------------------------------- replies


def test_parse_caption_judgement() -> None:
    good = parse_caption_judgement('{"score": 7, "explanation": "close"}')
    assert (good.score, good.explanation, good.parsed) == (7.0, "close", True)
    for reply in ['```json\n{"score": 7, "explanation": "x"}\n```', '{"explanation": "x"}', "seven", "[7]"]:
        bad = parse_caption_judgement(reply)
        assert (bad.score, bad.parsed, bad.raw) == (0.0, False, reply)


def test_parse_sgqa_judgement() -> None:
    yes = parse_sgqa_judgement('{"pred": "yes", "score": 4}')
    assert (yes.correct, yes.score, yes.parsed) == (True, 4.0, True)
    assert not parse_sgqa_judgement('{"pred": "no", "score": 1}').correct
    assert not parse_sgqa_judgement('{"pred": "Yes", "score": 5}').correct  # exactly "yes", as lmms-eval
    fallback = parse_sgqa_judgement("Yes, it matches.")
    assert (fallback.correct, fallback.parsed, fallback.score) == (True, False, None)
    assert not parse_sgqa_judgement("No match").correct


def test_exact_match_judge_says_what_it_is() -> None:
    judge = ExactMatchJudge()
    assert "exact-match" in judge.name and "not an LLM judge" in judge.name
    same = judge.score_caption("A man walks.", "a man  walks")
    assert same.score == 10.0 and "not an LLM judge" in same.explanation
    assert judge.score_caption("A man walks.", "A man runs.").score == 0.0
    assert judge.judge_sgqa("q", "On the table", "on the table").correct
    assert not judge.judge_sgqa("q", "On the desk", "on the table").correct


# ------------------------------------------------------------------------------- HTTP round trip


@dataclass
class FakeApi:
    """What the fake server answers (in order; the last repeats) and what it received."""

    replies: list[tuple[int, bytes]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


def completion(content: str) -> tuple[int, bytes]:
    body = {"id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}]}
    return 200, json.dumps(body).encode()


@pytest.fixture()
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            length = int(self.headers.get("Content-Length", "0"))
            api.requests.append({"path": self.path, "headers": dict(self.headers),
                                 "body": json.loads(self.rfile.read(length))})
            status, body = api.replies[min(len(api.requests), len(api.replies)) - 1]
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_caption_judge_round_trip(fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    fake_api.replies = [completion('{"score": 8, "explanation": "mostly right"}')]
    judge = OpenAICompatibleJudge(fake_api.url, "Llama-3.3-70B-Instruct", "JUDGE_KEY")
    result = judge.score_caption("A man opens the door.", "Someone opens a door.")
    assert (result.score, result.explanation, result.parsed) == (8.0, "mostly right", True)
    (request,) = fake_api.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert request["body"] == {"model": "Llama-3.3-70B-Instruct", "temperature": 0.0, "max_tokens": 256,
                               "messages": caption_judge_messages("A man opens the door.",
                                                                  "Someone opens a door.")}


def test_sgqa_judge_round_trip_with_v1_base_url_and_no_key(fake_api: FakeApi) -> None:
    fake_api.replies = [completion('{"pred": "no", "score": 1}')]
    judge = OpenAICompatibleJudge(fake_api.url + "/compat/v1/", "m", api_key_env=None)
    result = judge.judge_sgqa("Where?", "desk", "table")
    assert (result.correct, result.score) == (False, 1.0)
    (request,) = fake_api.requests
    assert request["path"] == "/compat/v1/chat/completions"
    assert "Authorization" not in request["headers"]
    assert request["body"]["messages"] == sgqa_judge_messages("Where?", "desk", "table")


def test_rate_limit_is_retried_with_backoff(fake_api: FakeApi) -> None:
    fake_api.replies = [(429, b'{"error": "slow down"}'), (503, b"{}"),
                        completion('{"score": 3, "explanation": "weak"}')]
    sleeps: list[float] = []
    judge = OpenAICompatibleJudge(fake_api.url, "m", None, base_delay_s=0.5, sleep=sleeps.append)
    assert judge.score_caption("a", "b").score == 3.0
    assert len(fake_api.requests) == 3
    assert sleeps == [0.5, 1.0]


def test_failures_raise_without_leaking_the_key(fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    fake_api.replies = [(500, b'{"error": "boom"}')]
    judge = OpenAICompatibleJudge(fake_api.url, "m", "JUDGE_KEY", max_retries=2, sleep=lambda s: None)
    with caplog.at_level(logging.DEBUG), pytest.raises(JudgeError) as info:
        judge.score_caption("a", "b")
    assert len(fake_api.requests) == 3  # the first try and two retries
    assert "HTTP 500" in str(info.value)
    for text in (str(info.value), caplog.text, repr(judge), str(judge)):
        assert SECRET not in text


def test_client_errors_are_not_retried(fake_api: FakeApi) -> None:
    fake_api.replies = [(400, b'{"error": "bad request"}')]
    judge = OpenAICompatibleJudge(fake_api.url, "m", None, sleep=lambda s: None)
    with pytest.raises(JudgeError, match="HTTP 400"):
        judge.score_caption("a", "b")
    assert len(fake_api.requests) == 1


def test_malformed_replies_raise(fake_api: FakeApi) -> None:
    judge = OpenAICompatibleJudge(fake_api.url, "m", None)
    fake_api.replies = [(200, b"not json")]
    with pytest.raises(JudgeError, match="not JSON"):
        judge.chat([{"role": "user", "content": "hi"}])
    fake_api.requests.clear()
    fake_api.replies = [(200, b'{"choices": []}')]
    with pytest.raises(JudgeError, match="no choices"):
        judge.chat([{"role": "user", "content": "hi"}])


def test_missing_key_and_bad_url_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUDGE_KEY_UNSET", raising=False)
    with pytest.raises(ValueError, match="JUDGE_KEY_UNSET"):
        OpenAICompatibleJudge("http://127.0.0.1:1", "m", "JUDGE_KEY_UNSET")
    with pytest.raises(ValueError):
        OpenAICompatibleJudge("127.0.0.1:8000", "m", None)
