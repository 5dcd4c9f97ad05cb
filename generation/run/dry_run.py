"""`bft generate --dry-run`: what a run would send and cost, before it sends anything.

The corpus is read and prepared exactly as a run would (the same document stream, the same context
check), and nothing is written to the output folder. Per stage it says:

- **documents** that would enter: exact for the first stage (what prepare passes on); for later stages
  at most that many, since earlier stages reject some (with `--probe`, also the number expected from
  the probe's keep rates);
- **prompt tokens**: counted with the stage's tokenizer when it has one (`tokenizer`), else estimated at
  `chars_per_token` characters a token, and said so; prompts that hold an instruction (curate, rewrite,
  distill) are counted with room for the longest instruction backtranslation keeps, so they are upper
  bounds;
- **requests** (documents x samples) and **completion tokens at most** (requests x `max_tokens`);
- **time**: from a throughput you give (`--throughput`, completion tokens per second), or measured by
  `--probe N`, which runs the first N documents through the stages for real, in a temporary folder, and
  reads their tokens per second and keep rates (a probe of N requests batches less than a full run, so
  its rate is a floor); a stage no probed document reached takes the `--throughput` given, else its
  time is unknown and the plan says why (the stage before kept none of them); else unknown;
- **dropped for length**: the documents prepare would drop (or cut) for `prepare.context_tokens`,
  named, before any request is paid for;
- **the request cache's share**: per stage, the documents whose requests the cache would answer, those
  it would ask, and those whose requests depend on a reply still to come (`run/cache_plan.py`);
- **money**, for each stage with a `price:` (`run/money.py`): the most it can cost (its prompt tokens as
  counted above, for each of its samples, plus `max_tokens` per request; the batch discount applied
  with `send: batch`; printed rounded up, so that it stays a bound), and after `--probe N` the expected
  cost: the requests of the documents expected to reach it, at the prompt and completion tokens per
  request the probe's server counted. The cache's share is not taken off: a bound holds whatever the
  cache holds.
  Stages in different currencies are totalled per currency. Unpriced stages say nothing about money.

When no document would enter the first stage, there is nothing to estimate: the plan says so, and
`nothing_enters` holds the reasons counted and what to check (`corpus/diagnosis.py`), which
`bft generate` prints as its error, as a run that admitted nothing does.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bft.generation.config import GenerateConfig
from bft.generation.corpus.diagnosis import nothing_enters
from bft.generation.corpus.stream import corpus_documents
from bft.generation.layout import PREPARE
from bft.generation.method.fitting import context_check, prompt_tokens
from bft.generation.reasons import EXCEEDS_CONTEXT
from bft.generation.records import Document, Rejected
from bft.generation.run.money import Cost, figure, money, money_total, per_currency, stage_price
from bft.generation.run.stages import build_stages
from bft.generation.run.stats import RunStats

SHOWN_DROPPED = 10
TIME_WIDTH = 12  # the time column's width when a cost column follows it


@dataclass
class StagePlan:
    """One stage's estimate."""

    name: str
    documents: int
    exact_documents: bool
    prompt_tokens: int
    exact_tokens: bool
    requests: int
    max_completion_tokens: int
    expected_documents: int | None = None  # from a probe's keep rates
    tokens_per_second: float | None = None  # measured (probe) or given (--throughput)
    seconds: float | None = None
    measured: bool = False  # its rate and time come from the probe, not from --throughput
    samples: int = 1  # requests per document
    max_cost: Cost | None = None  # the most it can cost; None: not priced
    expected_cost: Cost | None = None  # from the probe's completion tokens per request


@dataclass
class Plan:
    """What a run would do (module docstring)."""

    read: int = 0
    entering: int = 0
    rejected: Counter = field(default_factory=Counter)
    dropped_for_length: list[str] = field(default_factory=list)
    cut_for_length: int = 0
    stages: list[StagePlan] = field(default_factory=list)
    chars_per_token: float = 4.0
    probe: int | None = None
    throughput: float | None = None
    first_stage: str = "backtranslate"
    nothing_enters: str | None = None  # why no document would enter the first stage, when none would
    probe_gaps: dict[str, list[str]] = field(default_factory=dict)  # why -> stages whose time the probe left unknown
    cache_path: str | None = None  # the request cache counted (`run/cache_plan.py`), with per stage its share:
    cached: list = field(default_factory=list)  # `CachedShare`s (answered, asked, after_asking)


def plan_run(config: GenerateConfig, throughput: float | None = None) -> Plan:
    """Read and prepare the corpus; estimate each stage (module docstring). Sends nothing."""
    stages = build_stages(config)
    plan = Plan(chars_per_token=config.chars_per_token, throughput=throughput, first_stage=config.stages[0])
    room = "x" * min(config.backtranslate.max_instruction_chars, 4 * config.backtranslate.sampling.max_tokens)
    totals = {stage.name: [0, True] for stage in stages}
    for item in corpus_documents(config, context_check(config, stages)):
        plan.read += 1
        if isinstance(item, Rejected):
            plan.rejected[item.reason] += 1
            if item.reason == EXCEEDS_CONTEXT:
                plan.dropped_for_length.append(item.id)
            continue
        assert isinstance(item, Document)
        plan.entering += 1
        if any(flag.startswith("truncated_to_context:") for flag in item.flags):
            plan.cut_for_length += 1
        for stage in stages:
            instruction = "" if stage.name == "backtranslate" else room
            tokens, exact = prompt_tokens(stage, item.text, instruction, config.chars_per_token)
            totals[stage.name][0] += tokens
            totals[stage.name][1] &= exact
    for index, stage in enumerate(stages):
        requests = plan.entering * stage.samples
        price = stage_price(stage.name, stage.config)
        max_completion = requests * stage.config.sampling.max_tokens
        plan.stages.append(
            StagePlan(
                name=stage.name,
                documents=plan.entering,
                exact_documents=index == 0,
                prompt_tokens=totals[stage.name][0],
                exact_tokens=totals[stage.name][1],
                requests=requests,
                max_completion_tokens=max_completion,
                tokens_per_second=throughput,
                seconds=max_completion / throughput if throughput else None,
                samples=stage.samples,
                max_cost=price.cost(totals[stage.name][0] * stage.samples, max_completion) if price else None,
            )
        )
    if not plan.entering:
        plan.nothing_enters = nothing_enters(config, plan.read, plan.rejected, would=True)
    return plan


def add_probe(plan: Plan, config: GenerateConfig, documents: int, execute) -> Plan:
    """Run the first `documents` documents through the stages for real (`execute(config)`, in a temporary
    folder), and turn their measured tokens per second and keep rates into the plan's estimates.

    Every stage the probe sent requests to gets its measured figures. A stage no probed document reached
    (the stage before kept none of them) keeps the `--throughput` estimate when one was given, else its
    time is unknown, and `plan.probe_gaps` says why. With no document to enter, nothing is probed."""
    if not plan.entering:
        return plan
    with tempfile.TemporaryDirectory(prefix="bft-probe-") as folder:
        probe = dataclasses.replace(config, out=str(Path(folder) / "out"))
        probe.corpus = dataclasses.replace(config.corpus, limit=documents)
        probe.cache = dataclasses.replace(config.cache, mode="off")  # the probe measures the server, not the cache
        summary = execute(probe)
        stats: RunStats = summary.stats
    plan.probe = documents
    expected = float(plan.entering)
    before, unreached = PREPARE, None
    for stage in plan.stages:
        counts = stats.stages.get(stage.name)
        stage.expected_documents = round(expected)
        if counts is None or not counts.entered:
            if unreached is None:
                previous = stats.stages.get(before)
                entered = previous.entered if previous is not None else 0
                unreached = f"no probed document got that far: {before} kept none of the {entered} it was given"
            _unmeasured(plan, stage, unreached)
            expected = 0.0
            continue
        rate = counts.completion_tokens / counts.seconds if counts.requests and counts.seconds else None
        if counts.requests:
            _expect_cost(stage, counts.prompt_tokens / counts.requests, counts.completion_tokens / counts.requests)
        if rate:
            per_request = counts.completion_tokens / counts.requests
            stage.tokens_per_second, stage.measured = rate, True
            stage.seconds = stage.expected_documents * (stage.requests / max(stage.documents, 1)) * per_request / rate
        elif counts.requests:
            _unmeasured(plan, stage, f"its {counts.requests} probed requests gave no completion tokens")
        else:
            _unmeasured(plan, stage, f"its {counts.entered} probed documents were rejected before any request")
        expected *= counts.kept / counts.entered
        before = stage.name
    return plan


def _expect_cost(stage: StagePlan, prompt_per_request: float, completion_per_request: float) -> None:
    """A priced stage's expected cost: the requests of the documents expected to reach it, each with the
    prompt and completion tokens per request the probe's server counted (the plan's own prompt counts are
    bounds, with room for the longest instruction, and without the chat template)."""
    if stage.max_cost is None or stage.expected_documents is None:
        return
    requests = stage.expected_documents * stage.samples
    price = stage.max_cost.price
    stage.expected_cost = price.cost(round(requests * prompt_per_request), round(requests * completion_per_request))


def _unmeasured(plan: Plan, stage: StagePlan, why: str) -> None:
    """A stage the probe could not time: the --throughput given stands for it, else its time is unknown."""
    if plan.throughput:
        return  # the estimate plan_run made from --throughput stays
    stage.tokens_per_second = stage.seconds = None
    plan.probe_gaps.setdefault(why, []).append(stage.name)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def _time_lines(plan: Plan) -> list[str]:
    """The whole run's time, where it comes from, and why a stage's is unknown after a probe."""
    known = [s for s in plan.stages if s.seconds is not None]
    measured = [s.name for s in known if s.measured]
    given = [s.name for s in known if not s.measured]
    sources = []
    if measured:
        sources.append(f"measured on {plan.probe} documents" + ("" if not given else f": {', '.join(measured)}"))
    if given:
        sources.append(f"at {plan.throughput:g} tokens/s given" + ("" if not measured else f": {', '.join(given)}"))
    source = "; ".join(sources)
    if plan.stages and len(known) == len(plan.stages):
        return [f"  time, all stages in turn: {_duration(sum(s.seconds for s in known))} ({source})"]
    if not plan.probe:
        return ["  time: unknown (give --throughput TOKENS_PER_S, or --probe N to measure the server)"]
    lines = [f"  time unknown for {', '.join(names)}: {why}" for why, names in plan.probe_gaps.items()]
    lines.append("  (a larger --probe N, or --throughput TOKENS_PER_S, times them)")
    if known:
        names = ", ".join(s.name for s in known)
        lines.append(f"  time of the stages timed ({names}): {_duration(sum(s.seconds for s in known))} ({source})")
    return lines


def _stage_cost(stage: StagePlan) -> str:
    """A stage's money, as its documents are shown: `~expected <= most CURRENCY`; `-` when not priced."""
    most = stage.max_cost
    if most is None:
        return "-"
    expected = f"~{figure(stage.expected_cost.amount)} " if stage.expected_cost is not None else ""
    return f"{expected}<= {money(most.amount, most.currency, up=True)}" + (" batch" if most.batch else "")


def _cost_lines(plan: Plan) -> list[str]:
    """The run's money: the most it can cost, per currency; what the probe expects; the batch prices."""
    priced = [s for s in plan.stages if s.max_cost is not None]
    if not priced:
        return []
    which = (
        "all stages" if len(priced) == len(plan.stages) else f"the priced stages ({', '.join(s.name for s in priced)})"
    )
    line = f"  cost, {which}: at most {money_total(per_currency(s.max_cost for s in priced), up=True)}"
    unknown = [s.name for s in priced if s.expected_cost is None]
    if plan.probe and not unknown:
        expected = per_currency(s.expected_cost for s in priced)
        line += f"; expected ~{money_total(expected)} (tokens per request measured on {plan.probe} documents)"
    elif plan.probe:
        line += f"; expected: unknown for {', '.join(unknown)} (the probe measured no reply of it)"
    lines = [line]
    batch = [f"{s.name} at {s.max_cost.price.paid_share:g} of its price" for s in priced if s.max_cost.batch]
    if batch:
        lines.append(f"  batch: requests sent as provider batches (send: batch) cost less: {', '.join(batch)}")
    return lines


def format_plan(plan: Plan) -> str:
    """The plan as the terminal shows it."""
    lines = ["bft generate --dry-run: nothing was written" + (f"; {plan.probe} documents probed" if plan.probe else
             ", nothing was sent")]  # fmt: skip
    rejected = ", ".join(f"{reason}: {n}" for reason, n in sorted(plan.rejected.items()))
    lines.append(
        f"  corpus: {plan.read} records read; {plan.entering} would enter the first stage"
        + (f"; {sum(plan.rejected.values())} rejected by prepare ({rejected})" if rejected else "")
    )
    if plan.nothing_enters:
        lines.append(f"  no document would enter {plan.first_stage}: nothing to send, nothing to estimate")
        return "\n".join(lines)
    priced = any(s.max_cost is not None for s in plan.stages)
    lines.append(
        f"  {'stage':<14} {'documents':>14} {'prompt tokens':>16} {'requests':>9} {'completion tokens':>18}"
        f" {'tokens/s':>9}  " + (f"{'time':<{TIME_WIDTH}} cost" if priced else "time")
    )
    for s in plan.stages:
        documents = f"{s.documents}" if s.exact_documents else f"<= {s.documents}"
        if s.expected_documents is not None and not s.exact_documents:
            documents = f"~{s.expected_documents} {documents}"
        tokens = f"{'' if s.name == 'backtranslate' else '<= '}{'' if s.exact_tokens else '~'}{s.prompt_tokens:,}"
        rate = f"{s.tokens_per_second:,.0f}" if s.tokens_per_second else "-"
        time = f"{_duration(s.seconds):<{TIME_WIDTH}} {_stage_cost(s)}" if priced else _duration(s.seconds)
        lines.append(
            f"  {s.name:<14} {documents:>14} {tokens:>16} {s.requests:>9} {'<= ' + format(s.max_completion_tokens, ','):>18}"
            f" {rate:>9}  {time}"
        )
    if plan.stages and not all(s.exact_tokens for s in plan.stages):
        lines.append(
            f"  ~: prompt tokens estimated at {plan.chars_per_token:g} characters a token (set the stage's `tokenizer` "
            "for exact counts); prompts with an instruction counted with room for the longest one kept"
        )
    lines += _time_lines(plan)
    lines += _cost_lines(plan)
    if plan.dropped_for_length:
        shown = ", ".join(plan.dropped_for_length[:SHOWN_DROPPED])
        more = (
            f" and {len(plan.dropped_for_length) - SHOWN_DROPPED} more"
            if len(plan.dropped_for_length) > SHOWN_DROPPED
            else ""
        )
        lines.append(
            f"  dropped for length before any request (prepare.context_tokens): {len(plan.dropped_for_length)}: {shown}{more}"
        )
    if plan.cut_for_length:
        lines.append(f"  cut to fit before any request (prepare.context_overflow: cut): {plan.cut_for_length}")
    if plan.cached:
        shares = "; ".join(
            f"{s.stage} {s.answered} of {s.answered + s.asked}"
            + (f" (and up to {s.after_asking} after replies to come)" if s.after_asking else "")
            for s in plan.cached
        )
        lines.append(f"  request cache ({plan.cache_path}) answers the documents' requests: {shares}")
    return "\n".join(lines)
