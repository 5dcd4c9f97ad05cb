"""Humpback's tags, pinned to the papers' literal sentences (a swap must fail here, not pass silently)."""

from bft.generation.method.tags import TAGS, reversed_row, sft_row, tagged_turns

S_A = "Answer in the style of an AI Assistant."  # Humpback sec. 2.3: seed (human-written) examples
S_W = "Answer with knowledge from web search."  # augmented (web-derived) examples


def test_the_tag_sentences_are_the_papers_and_not_swapped():
    assert TAGS == {"S_a": S_A, "S_w": S_W}


def test_seed_rows_carry_s_a_and_web_rows_s_w_where_placed():
    seed = sft_row("s1", "S_a", "How do I proof dough?", "Let it rest.")
    web = sft_row("w1", "S_w", "How do I proof dough?", "Let it rest.", placement="system")
    assert seed["prompt"] == [{"role": "user", "content": f"How do I proof dough?\n\n{S_A}"}]
    assert web["prompt"] == [{"role": "system", "content": S_W}, {"role": "user", "content": "How do I proof dough?"}]
    assert seed["completion"] == web["completion"] == [{"role": "assistant", "content": "Let it rest."}]


def test_inference_with_both_tags_puts_s_a_first():
    assert tagged_turns("Q?", ["S_a", "S_w"])[-1]["content"] == f"Q?\n\n{S_A} {S_W}"
    assert tagged_turns("Q?", []) == [{"role": "user", "content": "Q?"}]


def test_reversed_rows_ask_for_the_instruction_of_the_text():
    row = reversed_row({"id": "p", "instruction": "Why is the sky blue?", "response": "Because of scattering."})
    assert "Because of scattering." in row["prompt"][0]["content"]
    assert row["completion"] == [{"role": "assistant", "content": "Why is the sky blue?"}]
