"""The model card: how to prompt the model comes with the facts (the tag sentences, the backward prompt)."""

from bft.cards.model_card import render_model_card


def facts(role: str) -> dict:
    return {
        "model_name": "m0",
        "recipe": "seed",
        "recipe_text": "learning_rate: 1e-5",
        "overrides": [],
        "role": role,
        "base_model": "org/base",
        "base_revision": None,
        "peft": None,
        "merged": False,
        "sources": [
            {
                "label": "seed",
                "path": "org/seed",
                "revision": "v1",
                "commit": None,
                "rows": 3,
                "used": 3,
                "kind": "pairs tagged S_a",
                "name": None,
            }
        ],  # fmt: skip
        "tag_placement": "user_end",
        "examples": 3,
        "eval_examples": 0,
        "hyper": {},
        "metrics": {"steps": 1},
        "versions": {"trl": "1", "transformers": "5", "torch": "2"},
        "local_dir": "runs/m0",
        "load_path": "runs/m0",
        "revision": None,
        "finished": "2026-12-01T00:00:00Z",
        "tag_texts": {"S_a": "Tag for the seed.", "S_w": "Tag for the web."},
        "backward_prompt": "Write the question for: <the text>",
    }


def test_a_forward_model_card_shows_the_tags_it_was_given(tmp_path):
    render_model_card(tmp_path, facts("seed"))
    text = (tmp_path / "README.md").read_text()
    assert "**S_a** = `Tag for the seed.`" in text and "Tag for the seed. Tag for the web." in text
    assert "base_model: org/base" in text and "- org/seed" in text


def test_a_backward_model_card_shows_the_prompt_it_was_given(tmp_path):
    render_model_card(tmp_path, facts("backward"))
    assert "Write the question for: <the text>" in (tmp_path / "README.md").read_text()
