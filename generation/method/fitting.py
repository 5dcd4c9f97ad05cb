"""Cutting a document so that its prompt fits the model's context, after a server refused it (HTTP 422).

Web documents are often longer than a model's context. TGI refuses such a request with 422
("`inputs` tokens + `max_new_tokens` must be <= 8192. Given: 9000 `inputs` tokens and 1024
`max_new_tokens`"); current vLLM with 400 ("You passed 5000 input tokens and requested 1024 output
tokens. However, the model's context length is only 4096 tokens, ..."), older vLLM ("This model's
maximum context length is 4096 tokens. However, you requested 5120 tokens (4096 in the messages, 1024 in
the completion)"); SGLang with 400 ("The input (5000 tokens) is longer than the model's context length
(4096 tokens)." or "Requested token count exceeds the model's maximum context length of 4096 tokens.
You requested a total of 5100 tokens: 4076 tokens from the input messages and 1024 tokens for the
completion. ..."). vLLM 0.32 words it "This model's maximum context length is 4096 tokens. However, your
prompt contains at least 4097 input tokens, which exceeds this limit even without any output tokens."
(`param: input_tokens`; it counts no further than one past the limit) or, before tokenizing, "... your
prompt contains 90000 characters (more than 81920 characters, ...)" (`param: input_text`), both in
`vllm/renderers/params.py`. A prompt that fits but leaves less room than `max_tokens` is not refused by
vLLM at all: it lowers `max_tokens` (`vllm/entrypoints/serve/utils/api_utils.py`, `get_max_tokens`), so bft
counts such prompts first (the server's `/tokenize`) and reads a reply cut short that way as too long (its
wording: "the prompt has N tokens and URL leaves M after K max_tokens"). The engine then cuts the document
once, keeping its beginning, and retries.

How much to cut, best source first:

1. the stage's tokenizer, when it has one (`tokenizer:`): the document is cut to exactly the number of
   tokens the server's limit leaves after the rest of the prompt and `max_tokens`;
2. the numbers in the server's error (limit and the prompt's token count): the document loses the
   excess, converted to characters at this prompt's own characters-per-token ratio, plus a margin;
3. the limits in TGI's `/info`, at `chars_per_token` characters per token;
4. nothing known: the document is halved.

Cuts fall on whitespace where one is near, so no word is split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MARGIN = 0.1  # cut 10 % more than the estimate says, so one retry is enough
MIN_CHARS = 64  # below this a document is not worth sending cut

_PATTERNS = [
    # TGI: `inputs` tokens + `max_new_tokens` must be <= 8192. Given: 9000 `inputs` tokens and 1024 `max_new_tokens`
    (re.compile(r"must be <= (\d+)\. Given: (\d+) `?inputs`? tokens and (\d+) `?max_new_tokens", re.I), "total"),
    # TGI: `inputs` must have less than 4096 tokens. Given: 5000
    (re.compile(r"must have less than (\d+) tokens\. Given: (\d+)", re.I), "input"),
    # vLLM: maximum context length is 4096 tokens. However, you requested 5120 tokens (4096 in the messages, 1024 ...
    (
        re.compile(
            r"maximum context length is (\d+) tokens.*?\((\d+) in the messages, (\d+) in the completion", re.I | re.S
        ),
        "total",
    ),
    # vLLM (newer): maximum context length is 2048 tokens. However, your request has 3000 input tokens
    (re.compile(r"maximum context length is (\d+) tokens.*?has (\d+) input tokens", re.I | re.S), "total_no_new"),
    # vLLM (current): You passed 5000 input tokens and requested 1024 output tokens. However, the model's
    # context length is only 4096 tokens, resulting in a maximum input length of 3072 tokens.
    (
        re.compile(
            r"You passed (\d+) input tokens and requested (\d+) output tokens\. However, the model's context length "
            r"is only (\d+) tokens",
            re.I,
        ),
        "vllm",
    ),
    # vLLM (renderers/params.py, newest): maximum context length is 4096 tokens. However, you requested 1024
    # output tokens and your prompt contains 5000 input tokens, for a total of 6024 tokens.
    (
        re.compile(
            r"maximum context length is (\d+) tokens\. However, you requested (\d+) output tokens and your prompt "
            r"contains (\d+) input tokens",
            re.I,
        ),
        "limit_new_given",
    ),
    # vLLM 0.32 (renderers/params.py, the token check): maximum context length is 4096 tokens. However, your
    # prompt contains at least 4097 input tokens, which exceeds this limit even without any output tokens.
    # ("at least": it stopped counting one past the limit, so the prompt's size is not known)
    (
        re.compile(
            r"maximum context length is (\d+) tokens\. However, your prompt contains (at least )?(\d+) input", re.I
        ),
        "vllm_prompt",
    ),
    # vLLM 0.32 (renderers/params.py, the character check before tokenizing): ... your prompt contains 90000
    # characters (more than 81920 characters, which is the upper bound for 4096 input tokens).
    (
        re.compile(r"maximum context length is (\d+) tokens\. However, your prompt contains \d+ characters", re.I),
        "limit_only",
    ),
    # bft's own, before sending (the server's /tokenize or the stage's tokenizer counted) or after a reply the
    # server cut short for room (vLLM lowers max_tokens quietly): the prompt has 5000 tokens and URL leaves 3072
    (re.compile(r"the prompt has (\d+) tokens and .{0,300}? leaves (\d+) after", re.I | re.S), "bft"),
    # SGLang: Requested token count exceeds the model's maximum context length of 4096 tokens. You requested a
    # total of 5100 tokens: 4076 tokens from the input messages and 1024 tokens for the completion.
    (
        re.compile(
            r"maximum context length of (\d+) tokens\. You requested a total of \d+ tokens: (\d+) tokens from the "
            r"input messages and (\d+) tokens for the completion",
            re.I,
        ),
        "total",
    ),
    # SGLang: The input (5000 tokens) is longer than the model's context length (4096 tokens).
    (
        re.compile(r"The input \((\d+) tokens\) is longer than the model's context length \((\d+) tokens\)", re.I),
        "sglang",
    ),
]


@dataclass(frozen=True)
class ContextLimit:
    """What a refusal says: the most prompt tokens allowed, and how many this prompt had (when said)."""

    allowed_input: int | None
    given_input: int | None


def parse_context_error(detail: str, max_new_tokens: int) -> ContextLimit:
    """Read the limit and the prompt's size from a server's "too long" message."""
    for pattern, kind in _PATTERNS:
        match = pattern.search(detail)
        if match is None:
            continue
        numbers = [int(n) for n in match.groups() if n is not None and n.strip().isdigit()]
        if kind == "total":
            limit, given, new = numbers
            return ContextLimit(limit - new, given)
        if kind == "input":
            limit, given = numbers
            return ContextLimit(limit - 1, given)
        if kind == "vllm":
            given, new, limit = numbers
            return ContextLimit(limit - new, given)
        if kind == "limit_new_given":
            limit, new, given = numbers
            return ContextLimit(limit - new, given)
        if kind == "vllm_prompt":
            limit, at_least, given = match.group(1), match.group(2), match.group(3)
            return ContextLimit(int(limit) - max_new_tokens, None if at_least else int(given))
        if kind == "limit_only":
            return ContextLimit(numbers[0] - max_new_tokens, None)
        if kind == "bft":
            given, allowed = numbers
            return ContextLimit(allowed, given)
        if kind == "sglang":
            given, limit = numbers
            return ContextLimit(limit - max_new_tokens, given)
        limit, given = numbers
        return ContextLimit(limit - max_new_tokens, given)
    return ContextLimit(None, None)


def info_limit(max_input_tokens: int | None, max_total_tokens: int | None, max_new_tokens: int) -> int | None:
    """The prompt budget TGI's `/info` implies for a request asking `max_new_tokens`."""
    budgets = []
    if max_input_tokens:
        budgets.append(max_input_tokens)
    if max_total_tokens and max_total_tokens > max_new_tokens:
        budgets.append(max_total_tokens - max_new_tokens)
    return min(budgets) if budgets else None


def cut_at_whitespace(text: str, chars: int) -> str:
    """The first `chars` characters of `text`, ending before the word that straddles the cut."""
    if chars >= len(text):
        return text
    head = text[: max(0, chars)]
    space = max(head.rfind(" "), head.rfind("\n"))
    if space > 0 and chars - space <= max(chars * 0.1, 40):  # a word, not a long run without spaces
        head = head[:space]
    return head.rstrip()


def fit_document(
    document: str,
    prompt: str,
    refusal: ContextLimit,
    info_budget: int | None,
    chars_per_token: float,
    tokenizer=None,
) -> str | None:
    """A shorter `document` for a prompt that was too long, or None when it cannot usefully be cut."""
    allowed = refusal.allowed_input or info_budget
    if tokenizer is not None and allowed:
        overhead = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        ids = tokenizer(document, add_special_tokens=False)["input_ids"]
        overhead -= len(ids)
        budget = int((allowed - overhead) * (1 - MARGIN / 2))
        cut = tokenizer.decode(ids[: max(0, budget)], skip_special_tokens=True) if budget > 0 else ""
    elif refusal.allowed_input and refusal.given_input:
        ratio = len(prompt) / refusal.given_input  # this prompt's own characters per token
        excess = refusal.given_input - refusal.allowed_input
        cut = cut_at_whitespace(document, int(len(document) - excess * ratio * (1 + MARGIN)))
    elif allowed:
        overhead_chars = len(prompt) - len(document)
        cut = cut_at_whitespace(document, int(allowed * chars_per_token * (1 - MARGIN)) - overhead_chars)
    else:
        cut = cut_at_whitespace(document, len(document) // 2)
    cut = cut.rstrip()
    if len(cut) < MIN_CHARS or len(cut) >= len(document):
        return None
    return cut
