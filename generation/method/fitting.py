"""The context budget, in one place: how much of a prompt fits a model's context, and cutting a document to fit.

Three moments meet the same arithmetic (a context less the stage's `max_tokens`), so it is written here once:

- **before the run** (`ContextFit`, `context_check`): with `prepare.context_tokens` set, prepare drops or cuts
  a document whose prompt would not fit some stage, before any request is paid for; the dry run counts
  prompts the same way (`prompt_tokens`: the stage's tokenizer, else `chars_per_token` characters a token);
- **before a request** (`declared_budget`, `counted_here`, `too_long_before_sending`): the engine refuses,
  unsent, a prompt longer than what the endpoint's declared limits leave after `max_tokens`, counted by the
  stage's tokenizer, else by the server (`/tokenize`) unless it surely fits (`surely_fits`);
- **after a refusal** (`parse_context_error`, `cut_to_fit`, `fit_document`): the document is cut once.

Which server replies count as "too long" is the client's to say (`endpoints/failures.py`, from the HTTP
status and wording); what the numbers in them mean is read here.

After a refusal. Web documents are often longer than a model's context. TGI refuses such a request with 422
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
3. the endpoint's declared limits (`declared_budget`: TGI's `/info`, vLLM's and SGLang's `max_model_len`), at
   `chars_per_token` characters per token;
4. nothing known: the document is halved.

Cuts fall on whitespace where one is near, so no word is split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from bft.generation.config import GenerateConfig
from bft.generation.errors import ConfigError
from bft.generation.method.stages import Stage
from bft.generation.records import StageRecord

MARGIN = 0.1  # cut 10 % more than the estimate says, so one retry is enough
MIN_CHARS = 64  # below this a document is not worth sending cut
# Token-count margin for a chat template's own tokens (roles, a default system prompt): below bytes + this,
# a prompt surely fits and is not counted at the server (every token of a byte-level vocabulary is >= 1 byte)
TEMPLATE_TOKENS = 256

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


def declared_budget(max_input_tokens: int | None, max_total_tokens: int | None, max_new_tokens: int) -> int | None:
    """The prompt tokens an endpoint's declared limits leave a request asking `max_new_tokens`: TGI's `/info`
    `max_input_tokens`, and the context (TGI `max_total_tokens`; vLLM and SGLang `max_model_len`) less
    `max_new_tokens`, whichever is less; None when the endpoint declares neither."""
    budgets = []
    if max_input_tokens:
        budgets.append(max_input_tokens)
    if max_total_tokens and max_total_tokens > max_new_tokens:
        budgets.append(max_total_tokens - max_new_tokens)
    return min(budgets) if budgets else None


def surely_fits(text: str, budget: int) -> bool:
    """Whether a prompt fits `budget` tokens whatever the tokenizer: no token is shorter than a byte."""
    return len(text.encode("utf-8")) + TEMPLATE_TOKENS <= budget


def tokenizer_count(tokenizer, text: str) -> int:
    """`text`'s tokens by a stage's tokenizer (a `transformers` tokenizer), without special tokens."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def counted_here(prompt: str, budget: int, tokenizer=None) -> int | None:
    """The prompt's tokens as far as they are known before sending it: counted by the stage's `tokenizer`
    when it has one; 0 (not counted) when it surely fits `budget` whatever the tokenizer; None when only the
    server can count them (`/tokenize`; a character estimate would cut documents that fit)."""
    if tokenizer is not None:
        return tokenizer_count(tokenizer, prompt)
    if surely_fits(prompt, budget):
        return 0
    return None


def too_long_before_sending(tokens: int | None, budget: int, endpoint: str, max_tokens: int) -> str | None:
    """Why a prompt of `tokens` tokens is refused before it is sent to `endpoint`, or None when it fits or
    nobody could count it. Worded as `parse_context_error` reads it back (its "bft" pattern), so the
    document is cut to the right size."""
    if tokens is None or tokens <= budget:
        return None
    return f"the prompt has {tokens} tokens and {endpoint} leaves {budget} after {max_tokens} max_tokens (known before sending)"


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
        overhead = tokenizer_count(tokenizer, prompt)
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


def cut_to_fit(
    stage: Stage,
    record: StageRecord,
    prompt: str,
    refusal: str,
    max_input_tokens: int | None,
    max_total_tokens: int | None,
    chars_per_token: float,
) -> StageRecord | None:
    """`record` with its document cut so that `stage`'s prompt (`prompt`, refused as too long with the detail
    `refusal` by an endpoint declaring these limits) fits the model's context, flagged
    `truncated_to_fit:STAGE:BEFORE->AFTER_chars`; None when it cannot usefully be cut."""
    max_new = stage.config.sampling.max_tokens
    cut = fit_document(
        record.document,
        prompt,
        parse_context_error(refusal, max_new),
        declared_budget(max_input_tokens, max_total_tokens, max_new),
        chars_per_token,
        stage.tokenizer if stage.config.tokenizer else None,
    )
    if cut is None:
        return None
    flag = f"truncated_to_fit:{stage.name}:{len(record.document)}->{len(cut)}_chars"
    return replace(record, document=cut, flags=[*record.flags, flag])


# -- before the run: prepare's context check --------------------------------------------------------


def prompt_tokens(stage: Stage, document: str, instruction: str, chars_per_token: float) -> tuple[int, bool]:
    """Tokens of the stage's prompt for `document` (and `instruction`), and whether the count is exact: by the
    stage's tokenizer when it has one, else estimated at `chars_per_token` characters a token."""
    record = StageRecord(id="", stage="", status="", document=document, position=0, input_location="")
    record.instruction = instruction
    text = stage.request(record).text
    if stage.config.tokenizer:
        return tokenizer_count(stage.tokenizer, text), True
    return int(len(text) / chars_per_token), False


class ContextFit:
    """Whether a document fits the context in every stage of the run that sends it (`prepare.context_tokens`).

    A stage's budget is the context less its `max_tokens` and `context_margin`, and, where its prompt
    holds an instruction (curate, rewrite), less room for the longest instruction backtranslation keeps
    (`backtranslate.max_instruction_chars` at `chars_per_token`, at most its `sampling.max_tokens`).
    Rewriting asks 2,048 new tokens of a 4,096-token Llama-2, so a draft that fits backtranslation may not
    fit rewriting: checked up front, a document is dropped or cut once, before any request, instead of
    refused mid-run.
    """

    def __init__(self, config: GenerateConfig, stages: list[Stage]):
        self.config = config
        backtranslate = config.backtranslate
        instruction = min(
            backtranslate.sampling.max_tokens, -(-backtranslate.max_instruction_chars // config.chars_per_token)
        )
        self.stages = []
        for stage in stages:
            holds_instruction = "instruction" in stage.template.placeholders or "generated instruction" in (
                stage.template.placeholders
            )
            budget = config.prepare.context_tokens - stage.config.sampling.max_tokens - config.prepare.context_margin
            budget -= int(instruction) if holds_instruction and stage.name != "backtranslate" else 0
            if budget <= 0:
                raise ConfigError(
                    f"prepare.context_tokens leaves no room for {stage.name}'s prompt after its max_tokens"
                    + (", an instruction" if holds_instruction else "")
                    + " and context_margin"
                )
            self.stages.append((stage, budget))

    def tokens(self, stage: Stage, text: str) -> int:
        return prompt_tokens(stage, text, "", self.config.chars_per_token)[0]

    def overflow(self, text: str) -> str | None:
        """The first stage `text` does not fit, or None."""
        return next((stage.name for stage, budget in self.stages if self.tokens(stage, text) > budget), None)

    def cut(self, text: str) -> str | None:
        """The longest beginning of `text` (cut on whitespace) that fits every stage, or None."""
        low, high, best = 0, len(text), None
        while low <= high:  # binary search on the number of characters kept
            middle = (low + high) // 2
            candidate = cut_at_whitespace(text, middle)
            if candidate and self.overflow(candidate) is None:
                best, low = candidate, middle + 1
            else:
                high = middle - 1
        return best


def context_check(config: GenerateConfig, stages: list[Stage]) -> ContextFit | None:
    """The context check for `prepare.context_tokens`, or None when it is not set."""
    if config.prepare.context_tokens is None:
        return None
    return ContextFit(config, stages)
