"""Every command as a newcomer meets it: one install line for all of them, each command's `--help` on the
base install alone, a missing optional package named with the extra that brings it, flags taken only whole."""

import json

import pytest

from bft.generation.cli import SUBCOMMANDS, build_parser, main, nested_parsers
from tests.paths import DEMO_CORPUS, REPO
from tests.without_packages import HIDING, extras, optional_packages, run_without

EVERY_HELP = (
    HIDING
    + """
import contextlib, io, json
from bft.generation.cli import main

answers = {}
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            status = main(argv)
        except SystemExit as exit:
            status = exit.code
    answers[" ".join(argv)] = [status, out.getvalue()]
print(json.dumps(answers))
"""
)


def every_parser():
    """Every parser `bft` builds: the table, each command's, and its steps' (`bft eval generate`, ...)."""
    found, todo = [], [build_parser(name) for name in (None, *SUBCOMMANDS)]
    while todo:
        parser = todo.pop()
        found.append(parser)
        todo += nested_parsers(parser)
    return found


def test_every_commands_help_works_with_the_base_install_alone():
    hidden = optional_packages()
    assert {"trl", "matplotlib", "peft", "warcio", "ray", "mauve"} <= hidden
    steps = [p.prog.split()[1:] for p in every_parser() if p.prog.startswith("bft eval ")]
    assert {" ".join(s) for s in steps} == {"eval generate", "eval judge", "eval winrate", "eval report"}
    helps = [["--help"], *([name, "--help"] for name in SUBCOMMANDS), *([*s, "--help"] for s in steps)]
    result = run_without(hidden, [json.dumps(helps)], code=EVERY_HELP)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    answers = json.loads(result.stdout.splitlines()[-1])
    for argv in helps:
        status, text = answers[" ".join(argv)]
        assert status == 0, (argv, text)
        assert text.startswith(f"usage: bft {' '.join(argv[:-1])}".rstrip()), (argv, text[:200])


def test_the_all_extra_is_every_optional_part_and_the_readme_installs_it():
    """`all` is the one install line: every other extra (the test tools aside) with nothing left out."""
    groups = extras()
    everything = {r for name, requirements in groups.items() if name not in ("all", "test") for r in requirements}
    assert set(groups["all"]) == everything
    using_it = (REPO / "README.md").read_text(encoding="utf-8").split("## Using it", 1)[1].split("\n## ", 1)[0]
    assert "-e '.[all]'" in using_it


def test_no_parser_takes_a_flags_prefix_for_the_flag():
    parsers = every_parser()
    assert {"bft", "bft generate", "bft train", "bft eval report"} <= {p.prog for p in parsers}
    assert sorted({p.prog for p in parsers if p.allow_abbrev}) == []


def test_a_flags_prefix_is_refused_with_the_flag_it_resembles(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit:  # `--stage` was quietly read as `--stages`
        main(["generate", str(DEMO_CORPUS), "--out", str(out), "--stage", "backtranslate", "--dry-run"])
    assert exit.value.code == 2
    assert "unrecognized arguments: --stage backtranslate; did you mean --stages?" in capsys.readouterr().err
    assert not out.exists()


def test_generate_with_an_endpoint_and_seed_run_on_the_base_install(tmp_path, tgi):
    hidden = optional_packages()
    out = tmp_path / "out"
    args = ["generate", DEMO_CORPUS, "--out", out, "--endpoint", tgi.url, "--limit", "3", "--no-progress"]
    result = run_without(hidden, args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "stats.json").read_text())["prepare"]["entered"] == 3
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"instruction": "Name a herb.", "response": "Basil."}) + "\n")
    result = run_without(hidden, ["seed", pairs, "--out", tmp_path / "seed.jsonl"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "seed.jsonl").read_text().count("\n") == 1
