"""`bft seed`: Humpback's seed from Open Assistant trees, other pair formats, and the reversed pairs."""

import json

import pytest

from bft.builders.seed_set import build_seed
from bft.generation.cli import main


def message(message_id, parent_id, role, text, lang="en", rank=None, deleted=False):
    return {
        "message_id": message_id,
        "parent_id": parent_id,
        "message_tree_id": "t",
        "role": role,
        "text": text,
        "lang": lang,
        "rank": rank,
        "deleted": deleted,
    }


OASST = [
    message("a2", "m1", "assistant", "A second, lower-ranked answer.", rank=1),  # replies may come first
    message("m1", None, "prompter", "How do I keep basil alive on a windowsill?"),
    message("a1", "m1", "assistant", "Give it sun, water when the soil is dry, and pinch the tops.", rank=0),
    message("p2", "a1", "prompter", "And in winter?"),  # a second turn
    message("a3", "p2", "assistant", "Add a grow light.", rank=0),
    message("m2", None, "prompter", "Wie pflege ich Basilikum?", lang="de"),
    message("a4", "m2", "assistant", "Viel Licht.", lang="de", rank=0),
    message("m3", None, "prompter", "What is a good first houseplant?"),
    message("a5", "m3", "assistant", "A pothos.", rank=1),  # no rank-0 reply
    message("m4", None, "prompter", "Removed question", deleted=True),
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_oasst_gives_first_turns_in_english_with_the_rank_0_reply(tmp_path):
    pairs, dropped = build_seed(str(write_jsonl(tmp_path / "oasst.jsonl", OASST)))
    assert [(p["instruction"], p["response"]) for p in pairs] == [
        ("How do I keep basil alive on a windowsill?", "Give it sun, water when the soil is dry, and pinch the tops.")
    ]
    assert dict(dropped) == {
        "assistant_not_rank_0": 2,
        "not_first_turn": 1,
        "other_language": 1,
        "no_rank_0_reply": 1,
        "deleted": 1,
        "reply_not_to_a_kept_first_turn": 2,
    }


def test_pairs_and_chat_messages_are_read_too(tmp_path):
    rows = [
        {"instruction": "Name a prime number.", "response": "Seven."},
        {"prompt": "Say hello.", "output": "Hello!"},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi?"},
                {"role": "assistant", "content": "Hi."},
            ]
        },
        {"text": "no pair here"},
    ]
    pairs, dropped = build_seed(str(write_jsonl(tmp_path / "pairs.jsonl", rows)))
    assert [(p["instruction"], p["response"]) for p in pairs] == [
        ("Name a prime number.", "Seven."),
        ("Say hello.", "Hello!"),
        ("Hi?", "Hi."),
    ]
    assert dict(dropped) == {"no_instruction_response": 1}


def test_the_cli_writes_the_seed_and_the_reversed_pairs(tmp_path, capsys):
    source = write_jsonl(tmp_path / "oasst.jsonl", OASST)
    args = ["seed", str(source), "--out", str(tmp_path / "seed.jsonl"), "--reversed", str(tmp_path / "rev.jsonl")]
    assert main(args) == 0
    (seed,) = [json.loads(line) for line in (tmp_path / "seed.jsonl").read_text().splitlines()]
    (reverse,) = [json.loads(line) for line in (tmp_path / "rev.jsonl").read_text().splitlines()]
    # the text in, inside P2 as `bft generate` sends it to a backward model ...
    (user,) = reverse["prompt"]
    assert user["role"] == "user" and user["content"].startswith("Below is a candidate answer")
    assert f"\n\n{seed['response']}\n\n" in user["content"] and "[INST]" not in user["content"]
    assert reverse["completion"] == [{"role": "assistant", "content": seed["instruction"]}]  # ... its instruction out
    assert "1 pairs" in capsys.readouterr().out
    # the seed file is what `bft build --seed` reads
    from bft.builders.bft_dataset import read_seed

    assert read_seed(tmp_path / "seed.jsonl")[0]["instruction"] == seed["instruction"]


def test_a_source_without_pairs_fails_clearly(tmp_path, capsys):
    source = write_jsonl(tmp_path / "nothing.jsonl", [{"text": "a web page"}])
    assert main(["seed", str(source), "--out", str(tmp_path / "seed.jsonl")]) == 2
    assert "gave no pairs" in capsys.readouterr().err


@pytest.mark.parametrize("language", ["de"])
def test_the_language_is_configurable(tmp_path, language):
    pairs, _ = build_seed(str(write_jsonl(tmp_path / "oasst.jsonl", OASST)), language=language)
    assert [p["instruction"] for p in pairs] == ["Wie pflege ich Basilikum?"]
