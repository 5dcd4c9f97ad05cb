"""The papers' prompts are used verbatim and filled without re-scanning web text."""

import hashlib
import re

import pytest

from bft.generation.errors import ConfigError
from bft.generation.method.prompts import load_template


def paper_prompts(shared_dir):
    text = (shared_dir / "docs" / "method.md").read_text(encoding="utf-8")
    blocks = re.findall(r"### (P\d) — [^\n]*\n.*?```\n(.*?)\n```", text, re.S)
    return dict(blocks)


# SHA-256 of each paper prompt's text as `../shared/docs/method.md` quotes it: a fresh clone without that folder
# still checks the shipped templates byte for byte (the test below ties these to the paper text where it is).
PAPER_SHA256 = {
    "P1": "e340c77ff22861e0e664dba4263fbdab7e918083554ef26ad174cb3df5289e63",
    "P2": "e2913d8e1a74e87b6fdc8b6fa0e9d346d59ca4c767bd35ca38132ffb8e8bcdef",
    "P3": "86a42d6aa5ee5abb9fe2e1ecc38f653e85be5584c0c79b89cacc2de7fd190904",
}
PROMPTS = [("curate", "P1"), ("backtranslate", "P2"), ("rewrite", "P3")]


@pytest.mark.parametrize(("name", "key"), PROMPTS)
def test_templates_are_byte_exact_copies_of_the_paper_text(name, key):
    assert hashlib.sha256(load_template(name).text.encode("utf-8")).hexdigest() == PAPER_SHA256[key]


@pytest.mark.parametrize(("name", "key"), PROMPTS)
def test_the_pinned_hashes_are_the_paper_texts(shared_dir, name, key):
    paper = paper_prompts(shared_dir)[key]
    assert hashlib.sha256(paper.encode("utf-8")).hexdigest() == PAPER_SHA256[key]
    assert load_template(name).text == paper


def test_backtranslate_raw_prompt_is_the_papers_llama2_text_with_the_document():
    document = "Water boils at 100 degrees Celsius at sea level."
    prompt = load_template("backtranslate").llama2_prompt(response=document)
    assert prompt == (
        "[INST] Below is a candidate answer to a question or instruction from an user. Write the most likely "
        "question to which the text below would be a great answer.\n\n"
        f"{document}\n\nAnswer in the style of an AI Assistant. [/INST]"
    )


def test_chat_message_drops_only_the_llama2_wrapper():
    template = load_template("rewrite")
    message = template.user_message(response="DRAFT", instruction="QUESTION")
    assert message.startswith("Given the draft response to the provided question below")
    assert message.endswith("Return the rewritten response between [RES] and [/RES].")
    assert "Draft Response: DRAFT\n\nQuestion: QUESTION\n\n" in message
    assert f"[INST] {message} [/INST]" == template.llama2_prompt(response="DRAFT", instruction="QUESTION")


def test_curation_prompt_fills_instruction_and_output_on_separate_lines_and_keeps_rating_literal():
    template = load_template("curate")
    filled = template.fill(generated_instruction="How do tides work?", output="The Moon pulls the oceans.")
    assert filled.endswith(
        'write "Score: <rating>" in the last line.\n\nHow do tides work?\nThe Moon pulls the oceans.'
    )
    assert (
        template.llama2_prompt(generated_instruction="a", output="b")
        == f"[INST] {template.fill(generated_instruction='a', output='b')} [/INST]"
    )


def test_placeholders_inside_documents_are_not_substituted_again():
    document = "A page that mentions <instruction> and <response> literally."
    filled = load_template("rewrite").fill(response=document, instruction="Q?")
    assert "Draft Response: A page that mentions <instruction> and <response> literally.\n\nQuestion: Q?" in filled


def test_missing_values_and_unknown_templates_are_errors():
    with pytest.raises(ValueError, match="needs values"):
        load_template("rewrite").fill(response="only one")
    with pytest.raises(ConfigError, match="unknown prompt template 'nope'"):
        load_template("nope")


def test_template_hash_identifies_the_text():
    template = load_template("curate")
    assert len(template.sha256) == 64
    assert template.sha256 != load_template("rewrite").sha256
    assert "2308.06259" in template.source
