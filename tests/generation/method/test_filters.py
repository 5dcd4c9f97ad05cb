"""Degenerate instructions, refusals and grounding: the filters, and their reasons through `bft generate`."""

import pytest
import yaml
from datasets import load_dataset

from bft.generation.cli import main
from bft.generation.config import DEFAULT_META_PATTERNS, DEFAULT_REFUSAL_PATTERNS
from bft.generation.method.filters import matches_any
from bft.generation.text import WORD_RE, copy_overlap, grounding, words
from tests.paths import DEMO_CORPUS
from tests.servers.models import Reply, document_of, draft_of, paper_model, prompt_kind
from tests.servers.tgi import TGITestServer

DOC = "Feed the starter once a day with equal weights of flour and water, and keep it somewhere warm overnight."


def test_copy_overlap_measures_how_much_of_an_instruction_is_the_document():
    assert copy_overlap("Feed the starter once a day with equal weights of flour and water", DOC) == 1.0
    assert copy_overlap("How often should I feed a sourdough starter, and with what?", DOC) == 0.0
    assert copy_overlap("Feed the starter once?", DOC) == 0.0  # too short to judge


def test_words_are_the_same_on_the_ascii_fast_path_and_the_general_one():
    every_ascii = "".join(chr(c) for c in range(128)) + " Mixed CASE_words 42x Don't e-mail"
    assert words(every_ascii) == [w.lower() for w in WORD_RE.findall(every_ascii)]
    assert words("ÉCOLE Straße İstanbul") == ["école", "straße", "i̇stanbul"]  # each word lowered whole
    assert words("") == [] and words(None) == []


@pytest.mark.parametrize(
    ("instruction", "meta"),
    [
        ("What is the most likely question to which the text below would be a great answer?", True),
        ("Summarize the text above.", True),
        ("How do I keep a sourdough starter alive?", False),
    ],
)
def test_meta_text_patterns(instruction, meta):
    assert matches_any(instruction, DEFAULT_META_PATTERNS) is meta


@pytest.mark.parametrize(
    ("response", "refusal"),
    [
        ("I'm sorry, but I cannot help with that request.", True),
        ("As an AI language model, I do not bake bread.", True),
        ("Feed it daily. I'm sorry to say there is no shortcut.", False),  # only the opening counts
        ("Keep the starter warm and feed it daily.", False),
    ],
)
def test_refusal_patterns_look_at_the_opening(response, refusal):
    assert matches_any(response, DEFAULT_REFUSAL_PATTERNS) is refusal


def test_grounding_is_the_share_of_trigrams_found_in_the_document():
    assert grounding("Feed the starter once a day", DOC) == 1.0
    assert grounding("Bake at two hundred degrees for forty minutes", DOC) == 0.0
    assert grounding("Feed the starter. Bake at two hundred degrees", DOC) == pytest.approx(1 / 6)


def troublesome_model(request):
    kind, prompt = prompt_kind(request.prompt), request.prompt
    if kind == "backtranslate":
        document = document_of(prompt)
        if "sourdough" in document:
            return Reply(" ".join(document.split()[:20]))  # copies the document
        if "sky" in document.lower():
            return Reply("Here is the most likely question for this passage: why is the sky blue?")
    if kind == "rewrite":
        draft = draft_of(prompt)
        if "tomato" in draft.lower():
            return Reply("[RES] I'm sorry, but I can't help with gardening questions. [/RES]")
        if "virtual environment" in draft.lower():
            return Reply("[RES] Bananas are an excellent source of potassium for athletes. [/RES]")
    return paper_model(request)


def test_filters_reject_with_reasons_end_to_end(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"rewrite": {"min_grounding": 0.3}}))
    with TGITestServer(troublesome_model) as server:
        args = ["generate", str(DEMO_CORPUS), "--out", str(tmp_path / "o"), "--endpoint", server.url]
        assert main([*args, "--config", str(config), "--no-progress"]) == 0
    rejected = load_dataset(str(tmp_path / "o"), "rejected", split="train")
    reasons = sorted((r["stage"], r["reason"]) for r in rejected)
    assert reasons == [
        ("backtranslate", "instruction_copies_document"),
        ("backtranslate", "instruction_meta_text"),
        ("rewrite", "rewrite_refusal"),
        ("rewrite", "rewrite_ungrounded"),
    ]
    ungrounded = next(r for r in rejected if r["reason"] == "rewrite_ungrounded")
    assert ungrounded["grounding"] < 0.3
    rewritten = load_dataset(str(tmp_path / "o"), "rewritten", split="train")
    assert all(g == 1.0 for g in rewritten["grounding"])  # the paper model's rewrites are the document itself
