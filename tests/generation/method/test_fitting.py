"""Cutting documents to fit a model's context, and expected scores from token probabilities."""

import math

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from bft.generation.method.fitting import (
    ContextLimit,
    counted_here,
    cut_at_whitespace,
    declared_budget,
    fit_document,
    parse_context_error,
    too_long_before_sending,
)
from bft.generation.method.parsing import expected_score, score_offset
from bft.generation.records import TokenChoice


@pytest.mark.parametrize(
    ("message", "limit"),
    [
        (
            "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 8192. "
            "Given: 9000 `inputs` tokens and 1024 `max_new_tokens`",
            ContextLimit(8192 - 1024, 9000),
        ),
        ("Input validation error: `inputs` must have less than 4096 tokens. Given: 5000", ContextLimit(4095, 5000)),
        (
            "This model's maximum context length is 4096 tokens. However, you requested 5120 tokens "
            "(4096 in the messages, 1024 in the completion). Please reduce the length of the messages.",
            ContextLimit(3072, 4096),
        ),
        (
            "This model's maximum context length is 2048 tokens. However, your request has 3000 input tokens.",
            ContextLimit(2048 - 256, 3000),
        ),
        ("prompt is too long", ContextLimit(None, None)),
    ],
)
def test_server_messages_give_the_prompt_budget(message, limit):
    assert parse_context_error(message, max_new_tokens=256) == limit


def test_declared_limits_leave_room_for_the_new_tokens():
    assert declared_budget(4095, 8192, 1024) == 4095
    assert declared_budget(None, 2048, 1024) == 1024
    assert declared_budget(None, None, 1024) is None
    assert declared_budget(None, 1024, 1024) is None  # a context no larger than max_tokens declares no budget


def test_a_prompt_is_counted_before_sending_only_where_it_may_not_fit():
    """Bytes + 256 (a chat template's own tokens) within the budget: no token is shorter than a byte, so it
    fits whatever the tokenizer and the server is not asked to count it; one byte more and only it can say."""
    assert counted_here("x" * 744, 1000) == 0
    assert counted_here("x" * 745, 1000) is None
    assert counted_here("a b c", 1, word_tokenizer(["a", "b", "c"])) == 3  # the stage's tokenizer always counts


def test_a_prompt_refused_before_sending_is_read_back_as_its_budget():
    assert too_long_before_sending(None, 100, "http://h", 50) is None  # nobody could count it: the server decides
    assert too_long_before_sending(100, 100, "http://h", 50) is None
    detail = too_long_before_sending(101, 100, "http://h", 50)
    assert detail is not None and parse_context_error(detail, 50) == ContextLimit(100, 101)


def test_cuts_fall_between_words():
    text = "alpha beta gamma delta epsilon"
    assert cut_at_whitespace(text, 14) == "alpha beta"
    assert cut_at_whitespace(text, 100) == text


def word_tokenizer(words):
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(sorted(set(words)))}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")


def test_with_a_tokenizer_the_document_is_cut_to_the_token_budget():
    document = " ".join(f"w{i}" for i in range(500))
    prompt = "Rewrite this please : " + document + " thanks"
    tokenizer = word_tokenizer(prompt.split())
    cut = fit_document(document, prompt, ContextLimit(200, 506), None, 3.0, tokenizer)
    assert document.startswith(cut)
    new_prompt = prompt.replace(document, cut)
    assert 180 <= len(tokenizer(new_prompt)["input_ids"]) <= 200  # fits, and not cut much more than needed


def test_without_a_tokenizer_the_error_s_numbers_set_the_character_budget():
    document = " ".join(f"word{i}" for i in range(1000))
    prompt = "Instruction header " + document
    cut = fit_document(document, prompt, ContextLimit(500, 1002), None, 3.0)
    assert document.startswith(cut) and 400 <= len(cut.split()) <= 500


def test_with_nothing_known_the_document_is_halved_and_tiny_ones_are_not_cut():
    document = "x " * 400
    assert len(fit_document(document, document, ContextLimit(None, None), None, 3.0)) == pytest.approx(400, abs=2)
    assert fit_document("short text", "p short text", ContextLimit(None, None), None, 3.0) is None


def choices(tokens, at, probabilities):
    return [
        TokenChoice(t, [(a, math.log(p)) for a, p in probabilities.items()] if t.strip() == at else [(t, -0.1)])
        for t in tokens
    ]


def test_expected_score_weights_the_alternatives_at_the_score_token():
    text = "Relevant and helpful. Score: 4"
    tokens = ["Relevant", " and", " helpful.", " Score:", " 4"]
    value = expected_score(choices(tokens, "4", {"4": 0.5, "5": 0.25, "3": 0.25}), text, score_offset(text))
    assert value == pytest.approx(4.0)
    # alternatives that are not scores are left out and the rest renormalized
    value = expected_score(choices(tokens, "4", {"4": 0.4, "5": 0.4, "The": 0.2}), text, score_offset(text))
    assert value == pytest.approx(4.5)


def test_expected_score_uses_the_last_score_and_falls_back_to_the_digit_token():
    text = "Score: 2 at first, but on reflection Score: 5"
    tokens = ["Score:", " 2", " at first, but on reflection", " Score:", " 5"]
    assert expected_score(choices(tokens, "5", {"5": 0.5, "4": 0.5}), text, score_offset(text)) == 4.5
    # token strings that do not spell the text exactly (normalized by the server): the digit token is used
    odd = [TokenChoice(t.strip(), c.top) for t, c in zip(tokens, choices(tokens, "5", {"5": 1.0}), strict=True)]
    assert expected_score(odd, text, score_offset(text)) == 5.0
    assert expected_score(choices(tokens, "5", {"five": 0.9, "Five": 0.1}), text, score_offset(text)) is None


@pytest.mark.parametrize(
    "message",
    [
        "You passed 5000 input tokens and requested 1024 output tokens. However, the model's context length is "
        "only 4096 tokens, resulting in a maximum input length of 3072 tokens. Please reduce the length of the "
        "input prompt. (parameter=input_tokens, value=5000)",
        "This model's maximum context length is 4096 tokens. However, you requested 1024 output tokens and your "
        "prompt contains 5000 input tokens, for a total of 6024 tokens.",
        "The input (5000 tokens) is longer than the model's context length (4096 tokens).",
        "Requested token count exceeds the model's maximum context length of 4096 tokens. You requested a total of "
        "6024 tokens: 5000 tokens from the input messages and 1024 tokens for the completion. Please reduce the "
        "number of tokens in the input messages or the completion to fit within the limit.",
    ],
    ids=["vllm", "vllm-newest", "sglang-input", "sglang-total"],
)
def test_current_vllm_and_sglang_refusals_give_the_prompt_budget(message):
    assert parse_context_error(message, 1024) == ContextLimit(3072, 5000)


def test_expected_scores_come_from_the_untruncated_distribution_whatever_the_server(tmp_path):
    """TGI reports alternatives after its warpers; truncated at top-p 0.9, a true 4.39 reads 4.60 and would be
    kept at 4.5. Scoring requests go out at temperature 1 without a nucleus cut, so the score is the model's."""
    import json

    import yaml
    from datasets import load_dataset

    from bft.generation.cli import main
    from tests.paths import DEMO_CORPUS
    from tests.servers.models import Reply, paper_model, prompt_kind
    from tests.servers.tgi import TGITestServer

    def scorer(request):
        if prompt_kind(request.prompt) == "curate":
            return Reply("Score: 5", top={"5": {"5": 0.55, "4": 0.37, "2": 0.08}})
        return paper_model(request)

    config = tmp_path / "c.yaml"
    curate = {"mode": "raw", "score_mode": "expected", "min_score": 4.5, "sampling": {"temperature": 1.0, "top_p": 0.9}}
    config.write_text(yaml.safe_dump({"stages": ["backtranslate", "curate"], "curate": curate}))
    with TGITestServer(scorer) as server:
        args = ["generate", str(DEMO_CORPUS), "--out", str(tmp_path / "o"), "--endpoint", server.url]
        assert main([*args, "--config", str(config), "--limit", "2", "--no-progress"]) == 0
        sent = [r.payload["parameters"] for r in server.requests if r.route == "/generate"]
    assert sent and all("top_p" not in p and p["temperature"] == 1.0 for p in sent)
    row = load_dataset(str(tmp_path / "o"), "rejected", split="train")[0]
    assert row["reason"] == "score_below_threshold" and row["expected_score"] == pytest.approx(4.39)
    provenance = row["provenance"][-1]
    assert provenance["server"] == "tgi" and json.loads(provenance["sampling"])["top_p"] == 1.0
