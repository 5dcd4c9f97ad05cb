"""The scripted models the test server plays, shared by the tests (and the attacks benchmark).

A script is `callable(SeenRequest) -> Reply | Fault`: what the "model" answers to one request
(`tests/servers/tgi.py` applies the token limit, stop sequences and prefill, and speaks the protocol).
`paper_model` answers each of the three paper prompts in the expected format; the others build on it.
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    """What the model "generates" (before max_tokens, stop sequences and prefill are applied)."""

    text: str
    delay: float = 0.0
    # alternatives for generated tokens: {"5": {"5": 0.6, "4": 0.3, "3": 0.1}} puts them at the token "5"
    top: dict[str, dict[str, float]] | None = None
    reasoning: str | None = None  # a reasoning model's thinking, sent in the flavor's reasoning field
    finish: str | None = None  # force a finish reason (vLLM/SGLang "abort")
    token_delay: float = 0.0  # streamed replies: seconds between tokens (a slow server that is still working)
    cut_after: int | None = None  # streamed replies: drop the connection after this many tokens, before [DONE]
    # streamed replies: after the tokens, an error event instead of a finish (vLLM: generate/base/serving.py)
    stream_error: dict | None = None


@dataclass
class Fault:
    """An error answer (`status` with the flavor's error body), or `reset=True` to drop the connection."""

    status: int = 500
    error: str = "Incomplete generation"
    error_type: str = "incomplete_generation"
    reset: bool = False
    body: str | None = None  # raw body instead of the JSON error (malformed answers)
    delay: float = 0.0
    retry_after: float | None = None  # a `Retry-After` header (seconds)


@dataclass
class SeenRequest:
    route: str
    payload: dict[str, Any]
    prompt: str  # the raw prompt, or the last user message for chat
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased


Script = Callable[[SeenRequest], Reply | Fault]


# -- reading bft's prompts ------------------------------------------------------------------------------------


def prompt_kind(prompt: str) -> str:
    if "Write the most likely question" in prompt:
        return "backtranslate"
    if "5-point scale" in prompt:
        return "curate"
    if "rewrite the draft" in prompt:
        return "rewrite"
    return "other"


def draft_of(prompt: str) -> str:
    match = re.search(r"Draft Response: (.*?)\n\nQuestion: ", prompt, re.S)
    return match.group(1) if match else ""


def document_of(prompt: str) -> str:
    match = re.search(r"would be a great answer\.\n\n(.*?)\n\nAnswer in the style", prompt, re.S)
    return match.group(1) if match else ""


def output_of(prompt: str) -> str:
    """The candidate answer (the document) in a curation prompt, with any Llama-2 wrapper taken off."""
    tail = prompt.split("in the last line.\n\n", 1)[-1]
    output = tail.split("\n", 1)[-1]
    return output[: -len(" [/INST]")] if output.endswith(" [/INST]") else output


def without_invisible(text: str) -> str:
    """`text` with every format character (zero-width spaces and joiners, U+2060, BOM, ...) dropped."""
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


# -- the models -----------------------------------------------------------------------------------------------


def paper_model(request: SeenRequest) -> Reply:
    """A deterministic stand-in that follows P1-P3's output formats."""
    kind = prompt_kind(request.prompt)
    if kind == "backtranslate":
        words = document_of(request.prompt).split()[:6]
        return Reply("What should I know about " + " ".join(words).rstrip(".,;:") + "?")
    if kind == "curate":
        return Reply("The answer is focused and complete.\nScore: 5")
    if kind == "rewrite":
        return Reply("[RES] " + draft_of(request.prompt).strip() + " [/RES]")
    return Reply("Hello.")


def picky_model(request: SeenRequest) -> Reply:
    """Scores documents about water low, so curation rejects some candidates."""
    if prompt_kind(request.prompt) == "curate" and "water" in request.prompt.lower():
        return Reply("Too vague.\nScore: 2")
    return paper_model(request)


def slow(delay: float) -> Script:
    """`paper_model`, every answer after `delay` seconds: more in flight, more tokens/s."""

    def script(request: SeenRequest) -> Reply:
        reply = paper_model(request)
        reply.delay = delay
        return reply

    return script


def tagger(request: SeenRequest) -> Reply:
    """A tagger that gives one tag per sentence of the response it is shown, and nothing readable for code."""
    response = request.prompt.split("Response:\n", 1)[1].split("\n\nAnswer with one JSON array", 1)[0]
    if response.startswith("def "):
        return Reply("I cannot tag this.")
    sentences = [s for s in re.split(r"[.!?]\s", response) if s.strip()]
    return Reply("Tags: " + json.dumps([{"tag": f"skill {i}", "explanation": "x"} for i in range(len(sentences))]))


HONEST_REWRITE = "A short, direct answer about keeping a sourdough starter healthy."


def copying_model(drop_invisible: bool, own_score: Callable[[str], int] = lambda document: 2) -> Script:
    """A model that copies the document back after its own answer, as small models do.

    Curation: its own reasoning and `Score: own_score(document)`, then the document verbatim. Rewriting: its
    own `[RES] ... [/RES]` block, then the draft verbatim. With `drop_invisible`, the copy loses every format
    character (the escaper's U+2060 included), as a model that does not reproduce invisible characters would.
    """

    def copy(text: str) -> str:
        return without_invisible(text) if drop_invisible else text

    def script(request: SeenRequest) -> Reply:
        kind = prompt_kind(request.prompt)
        if kind == "curate":
            document = output_of(request.prompt)
            score = own_score(document)
            return Reply(f"The answer reads like a web page with its own notes.\nScore: {score}\n\n{copy(document)}")
        if kind == "rewrite":
            return Reply(f"[RES] {HONEST_REWRITE} [/RES]\n\nThe draft said: {copy(draft_of(request.prompt))}")
        return paper_model(request)

    return script


def own_score(text: str) -> int:
    """The copying model's own score: 2 for documents that attack the score, 5 for those that attack the tags."""
    text = without_invisible(text)
    return 5 if "pills" in text or "between [" in text or "[RES" in text.upper() or "[/RES" in text.upper() else 2


# the ways the copying model is asked: name -> (the stages' mode, whether the server has TGI's /info and /generate)
MODES = {
    "chat": ("chat", True),
    "raw-tgi": ("raw", True),
    "raw-openai": ("raw", False),
}


@dataclass
class Sequence:
    """A script that plays `answers` in order for matching requests, then falls back to `then`."""

    answers: list[Reply | Fault]
    then: Script = paper_model
    when: Callable[[SeenRequest], bool] = lambda request: True
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: SeenRequest) -> Reply | Fault:
        with self.lock:
            if self.when(request) and self.answers:
                return self.answers.pop(0)
        return self.then(request)
