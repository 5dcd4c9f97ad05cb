"""BAFT's optional analyses of a dataset (section 5), added to a data report on request.

Both `bft eval report` and `bft build` take the same options, so a card and a printed report show the
same figures computed the same way:

- `mauve`: pairs `A,B` of configs (`config`, or `FOLDER:config` of another output) whose responses are
  compared with MAUVE on `features_model`'s features (`mauve_comparison.py`; BAFT Table 3);
- `tagger`: a served model's URL; each config's pairs are tagged InsTag-style (`instag_counts.py`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bft.builders.instag_counts import tag_configs
from bft.builders.mauve_comparison import EMBEDDED, compare_configs
from bft.builders.report import PAIR_CONFIGS, add_comparisons, add_tag_counts


@dataclass
class Analyses:
    """What to add to a report beyond its standard figures (module docstring)."""

    mauve: list[str] = field(default_factory=list)
    features_model: str = EMBEDDED
    mauve_size: int = 1000
    seed: int = 25
    tagger: str | None = None
    tagger_model: str | None = None
    tag_size: int = 200


def add_analyses(report: dict, rows_by_config: dict[str, list[dict]], analyses: Analyses | None) -> dict:
    """`report` with the analyses asked for, each naming how it was computed."""
    if analyses is None:
        return report
    if analyses.tagger:
        pairs = {name: rows_by_config[name] for name in PAIR_CONFIGS if rows_by_config.get(name)}
        counts, tagger = asyncio.run(tag_configs(analyses.tagger, analyses.tagger_model, pairs, analyses.tag_size))
        add_tag_counts(report, counts, tagger, analyses.tag_size)
    if analyses.mauve:
        comparisons = compare_configs(
            analyses.mauve, rows_by_config, analyses.features_model, analyses.mauve_size, analyses.seed
        )
        add_comparisons(report, comparisons)
    return report


def add_analysis_arguments(parser) -> None:
    """The options of `Analyses`, for `bft eval report` and `bft build`."""
    parser.add_argument(
        "--mauve",
        action="append",
        default=[],
        metavar="A,B",
        help="MAUVE between two configs' responses (BAFT Table 3); each side CONFIG or FOLDER:CONFIG; repeatable",
    )
    parser.add_argument(
        "--features-model", default=EMBEDDED, help="MAUVE features: embedded (SmolLM2, offline) or a model id/path"
    )
    parser.add_argument("--mauve-size", type=int, default=1000, help="MAUVE: texts of each side at most (BAFT: 10K)")
    parser.add_argument("--mauve-seed", type=int, default=25, help="MAUVE's k-means seed")
    parser.add_argument("--tagger", help="A served model that tags each pair InsTag-style (response complexity)")
    parser.add_argument("--tagger-model", help="Model name sent to the tagger, for servers that do not list theirs")
    parser.add_argument("--tag-size", type=int, default=200, help="Pairs tagged per config at most")


def analyses_from(args) -> Analyses:
    return Analyses(
        args.mauve, args.features_model, args.mauve_size, args.mauve_seed, args.tagger, args.tagger_model, args.tag_size
    )
