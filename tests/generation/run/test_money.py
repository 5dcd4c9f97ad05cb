"""What a run costs: money from known token counts, stats.json's `cost` after a run on the test server (cached
replies free), the progress bars' money, the dry run's bound against the run, and the dataset card's line.

Prices are per million input and output tokens, a batch billed a share of both, as the providers price them
(https://developers.openai.com/api/docs/pricing; Anthropic's Message Batches: half the price of input and
output). The runs go to the TGI test server (`tests/servers/tgi.py`: a token is a whitespace-separated word,
as `tests/servers/protocol.py` counts it) and, for a stage sent by batch, to the OpenAI batch test server
(`tests/servers/openai_batch.py`), both answering with `models.paper_model`.
"""

import json
import re
import threading

import pytest
import yaml

from bft.generation.cli import main
from bft.generation.config import PriceConfig, StageConfig
from bft.generation.config.files import load_config
from bft.generation.errors import ConfigError
from bft.generation.run.dry_run import format_plan, plan_run
from bft.generation.run.money import cost_line, money, money_total, per_currency, stage_price
from bft.generation.run.progress import StageBars
from bft.generation.run.stats import RunStats, StageStats
from tests.paths import DEMO_CORPUS
from tests.servers import openai_batch
from tests.servers.models import prompt_kind
from tests.servers.openai_batch import OpenAIBatchServer
from tests.servers.protocol import count_tokens
from tests.servers.tgi import TGITestServer

STAGES = ("backtranslate", "curate", "rewrite")
KEY_ENV = "BFT_TEST_MONEY_BATCH_KEY"


def priced(price: PriceConfig | None, send: str = "live") -> StageConfig:
    return StageConfig(price=price, send=send)


def stats_with(name: str, config: StageConfig, prompt: int, completion: int) -> StageStats:
    stats = StageStats(prompt_tokens=prompt, completion_tokens=completion)
    stats.price = stage_price(name, config)
    return stats


def config_file(tmp_path, settings: dict) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return str(path)


def generate(*args) -> int:
    return main(["generate", *map(str, args), "--no-progress"])


# -- money from known token counts ------------------------------------------------------------------


def test_a_stage_costs_its_tokens_at_its_price_and_a_batch_the_discounted_share():
    price = PriceConfig(input=2.0, output=8.0)
    live = stage_price("curate", priced(price)).cost(1_500_000, 500_000)
    assert (live.amount, live.currency, live.batch) == (pytest.approx(3.0 + 4.0), "USD", False)
    batch = stage_price("curate", priced(price, send="batch")).cost(1_500_000, 500_000)
    assert (batch.amount, batch.batch) == (pytest.approx(3.5), True)
    a_fifth_off = PriceConfig(input=2.0, output=8.0, batch_discount=0.8)
    assert stage_price("curate", priced(a_fifth_off, send="batch")).cost(1_000_000, 0).amount == pytest.approx(1.6)
    assert stage_price("curate", priced(None)) is None  # no price: nothing said about money


def test_currencies_are_totalled_apart_never_summed_across():
    usd = stage_price("backtranslate", priced(PriceConfig(input=1.0, output=1.0))).cost(1_000_000, 0)
    eur = stage_price("curate", priced(PriceConfig(input=2.0, output=1.0, currency="EUR"))).cost(500_000, 0)
    more_usd = stage_price("rewrite", priced(PriceConfig(input=1.0, output=1.0))).cost(250_000, 0)
    assert per_currency([usd, eur, more_usd]) == {"USD": pytest.approx(1.25), "EUR": pytest.approx(1.0)}
    assert money_total(per_currency([usd, eur, more_usd])) == "1.25 USD + 1.00 EUR"


@pytest.mark.parametrize(
    ("price", "send", "named"),
    [
        (PriceConfig(input=-1.0), "live", "rewrite.price.input is -1.0"),
        (PriceConfig(output=float("nan")), "live", "rewrite.price.output is nan"),
        (PriceConfig(batch_discount=0.0), "batch", "rewrite.price.batch_discount is 0.0"),
        (PriceConfig(batch_discount=1.5), "live", "rewrite.price.batch_discount is 1.5"),
        (PriceConfig(currency=" "), "live", "rewrite.price.currency is empty"),
    ],
)
def test_a_price_that_cannot_be_is_refused_and_named(price, send, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        stage_price("rewrite", priced(price, send))


def test_a_bad_price_is_named_before_any_server_starts(tmp_path, capsys):
    """bft would start a vLLM server (whose Python is missing here) before the engine prices the stages: the
    price is refused first, naming the stage and the setting."""
    config = config_file(tmp_path, {"rewrite": {"price": {"input": -1.0}}})
    serve = ["--serve", "vllm", "--serve-model", "m", "--serve-python", tmp_path / "no-python"]
    assert generate(DEMO_CORPUS, "--out", tmp_path / "out", "--config", config, *serve) == 2
    assert "rewrite.price.input is -1.0" in capsys.readouterr().err


def test_amounts_print_compact_and_a_bound_rounds_up():
    assert money(1234.5678, "USD") == "1,234.57 USD"
    assert money(0.0123, "USD") == "0.012 USD"
    assert money(0.0123, "USD", up=True) == "0.013 USD"  # a bound printed stays a bound
    assert money(0.5, "EUR") == "0.50 EUR"
    assert money(0.000042, "USD") == "0.000042 USD"
    assert money(0, "USD") == "0 USD"


def test_stats_json_holds_each_priced_stage_s_cost_and_the_run_total_and_reads_them_back():
    stats = RunStats(
        {
            "prepare": StageStats(),
            "backtranslate": stats_with("backtranslate", priced(PriceConfig(input=1.0, output=2.0)), 1000, 500),
            "curate": stats_with("curate", priced(PriceConfig(input=1.0, output=2.0), "batch"), 2000, 100),
            "rewrite": StageStats(prompt_tokens=99, completion_tokens=99),  # not priced
        }
    )
    data = json.loads(json.dumps(stats.to_json()))
    assert data["backtranslate"]["cost"] == {
        "input_tokens": 1000,
        "output_tokens": 500,
        "amount": 0.002,
        "currency": "USD",
        "batch": False,
        "price_per_million": {"input": 1.0, "output": 2.0, "batch_discount": 0.5},
    }
    assert data["curate"]["cost"]["amount"] == pytest.approx(0.0011) and data["curate"]["cost"]["batch"] is True
    assert "cost" not in data["rewrite"] and "cost" not in data["prepare"]
    assert data["cost"] == {"USD": pytest.approx(0.0031)}
    again = RunStats.from_json(data)  # the run total is not read as a stage
    assert list(again.stages) == ["prepare", "backtranslate", "curate", "rewrite"]
    assert again.to_json() == data


def test_blocks_merged_into_one_run_keep_their_price():
    """The Ray driver sums the blocks' counters (each block's `as_dict`, with its `cost`)."""
    block = stats_with("curate", priced(PriceConfig(input=1.0, output=2.0)), 1000, 500).as_dict()
    merged = RunStats.empty(["curate"])
    merged.merge({"curate": block})
    merged.merge({"curate": block})
    cost = merged.stages["curate"].cost()
    assert (cost.input_tokens, cost.output_tokens, cost.amount) == (2000, 1000, pytest.approx(0.004))


def test_each_priced_stage_s_bar_shows_the_money_spent_so_far():
    stats = {
        "backtranslate": stats_with("backtranslate", priced(PriceConfig(input=3.0, output=15.0)), 10_000, 2_000),
        "curate": StageStats(prompt_tokens=10_000),  # not priced
    }
    bars = StageBars(list(stats), total=1)
    bars.close(stats)
    postfixes = {name: bar.postfix for name, bar in bars.bars.items()}
    assert "spent=0.060 USD" in postfixes["backtranslate"]
    assert "spent" not in postfixes["curate"]


def test_the_card_line_names_each_stage_s_cost_and_the_total():
    costs = {
        "backtranslate": stage_price("backtranslate", priced(PriceConfig(input=1.0, output=2.0))).cost(1000, 500),
        "curate": stage_price("curate", priced(PriceConfig(input=1.0, output=2.0), "batch")).cost(2000, 100),
    }
    line = cost_line(costs)
    assert line.startswith("0.0031 USD in all: backtranslate 0.0020 USD (1,000 prompt and 500 completion tokens)")
    assert "curate 0.0011 USD (2,000 prompt and 100 completion tokens, as a batch at 0.5 of the price)" in line
    assert "\n" not in line and cost_line({}) == ""


# -- a run on the test server -----------------------------------------------------------------------

PRICES = {"input": 1000.0, "output": 3000.0}


def test_a_run_s_cost_is_the_tokens_the_server_counted_and_a_cached_rerun_costs_nothing(tmp_path):
    settings = {name: {"price": PRICES} for name in STAGES}
    settings["curate"]["price"] = {**PRICES, "currency": "EUR"}
    config = config_file(tmp_path, settings)
    first, second = tmp_path / "first", tmp_path / "second"
    with TGITestServer() as server:
        assert generate(DEMO_CORPUS, "--out", first, "--endpoint", server.url, "--limit", 4, "--config", config) == 0
        asked = {name: [r for r in server.requests if prompt_kind(r.prompt) == name] for name in STAGES}
        assert generate(DEMO_CORPUS, "--out", second, "--endpoint", server.url, "--limit", 4, "--config", config) == 0
    stats = json.loads((first / "stats.json").read_text())
    for name in STAGES:
        cost = stats[name]["cost"]
        assert cost["input_tokens"] == sum(count_tokens(r.prompt) for r in asked[name]) > 0  # as the server counted
        assert cost["output_tokens"] == stats[name]["completion_tokens"] > 0
        expected = (cost["input_tokens"] * 1000.0 + cost["output_tokens"] * 3000.0) / 1e6
        assert cost["amount"] == pytest.approx(expected) and cost["batch"] is False
    usd = stats["backtranslate"]["cost"]["amount"] + stats["rewrite"]["cost"]["amount"]
    assert stats["cost"] == {"USD": pytest.approx(usd), "EUR": pytest.approx(stats["curate"]["cost"]["amount"])}
    cached = json.loads((second / "stats.json").read_text())
    for name in STAGES:
        assert cached[name]["cache_hits"] == len(asked[name])  # every reply from the cache ...
        assert cached[name]["cost"]["amount"] == 0  # ... and none paid for
    assert cached["cost"] == {"USD": 0, "EUR": 0}


def test_a_stage_sent_as_provider_batches_is_charged_the_batch_share(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, openai_batch.API_KEY)  # the key the batch test server takes
    out = tmp_path / "out"
    with TGITestServer() as server, OpenAIBatchServer() as provider:
        polled = {"poll_interval": 0.05, "poll_max": 0.2}
        batch = {"api": "openai", "url": provider.url, "token_env": KEY_ENV, **polled}
        rewrite = {"send": "batch", "model": "test-batch-model", "batch": batch, "price": PRICES}
        config = config_file(tmp_path, {"rewrite": rewrite, "curate": {"price": PRICES}})
        codes: list[int] = []
        arguments = (DEMO_CORPUS, "--out", out, "--endpoint", server.url, "--limit", 4, "--config", config)
        run = threading.Thread(target=lambda: codes.append(generate(*arguments)))
        run.start()
        run.join(120)  # a run that never ends fails the test instead of hanging it
        assert not run.is_alive() and codes == [0]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rewrite"]["batches"]["items"] == stats["rewrite"]["requests"] > 0  # sent as a batch ...
    cost = stats["rewrite"]["cost"]
    assert cost["batch"] is True and cost["output_tokens"] == stats["rewrite"]["completion_tokens"] > 0
    listed = (cost["input_tokens"] * 1000.0 + cost["output_tokens"] * 3000.0) / 1e6
    assert cost["amount"] == pytest.approx(listed / 2)  # ... at half the list price
    assert stats["curate"]["cost"]["batch"] is False  # the stages sent live pay it whole
    assert stats["cost"]["USD"] == pytest.approx(cost["amount"] + stats["curate"]["cost"]["amount"])


def test_an_unpriced_run_says_nothing_about_money(tmp_path, capsys):
    out = tmp_path / "out"
    with TGITestServer() as server:
        assert generate(DEMO_CORPUS, "--out", out, "--endpoint", server.url, "--limit", 2, "--dry-run") == 0
        assert generate(DEMO_CORPUS, "--out", out, "--endpoint", server.url, "--limit", 2) == 0
    assert "cost" not in capsys.readouterr().out
    stats = json.loads((out / "stats.json").read_text())
    assert "cost" not in stats and all("cost" not in stats[name] for name in STAGES)


def at_most(plan: str, stage: str) -> float:
    """The bound a dry run printed for `stage`'s cost (the row's last cell: `[~EXPECTED ]<= AMOUNT USD`)."""
    row = re.search(rf"^  {stage} .*<= ([\d,.]+) USD( batch)?$", plan, re.M)
    return float(row.group(1).replace(",", ""))


def test_the_dry_run_s_bound_holds_for_the_run_and_a_probe_expects_what_the_run_costs(tmp_path, capsys):
    config = config_file(tmp_path, {name: {"price": PRICES} for name in STAGES})
    out = tmp_path / "out"
    with TGITestServer() as server:
        common = [DEMO_CORPUS, "--out", out, "--endpoint", server.url, "--limit", 6, "--config", config]
        assert generate(*common, "--dry-run", "--throughput", 100) == 0
        plan = capsys.readouterr().out
        assert generate(*common, "--dry-run", "--probe", 2) == 0
        probed = capsys.readouterr().out
        assert generate(*common) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert re.search(r"^  stage .* time +cost$", plan, re.M)
    for name in STAGES:
        assert 0 < stats[name]["cost"]["amount"] <= at_most(plan, name)
    whole = re.search(r"^  cost, all stages: at most ([\d,.]+) USD$", plan, re.M)
    assert stats["cost"]["USD"] <= float(whole.group(1).replace(",", ""))
    expected = re.search(r"expected ~([\d,.]+) USD \(tokens per request measured on 2 documents\)", probed)
    # the probe's estimate is near what the run cost (its documents and the scripted replies are alike)
    assert float(expected.group(1).replace(",", "")) == pytest.approx(stats["cost"]["USD"], rel=0.25)


def test_a_batch_stage_s_bound_is_the_discounted_share_and_said_so(tmp_path, capsys):
    plans = {}
    for send in ("live", "batch"):
        curate = {"price": {**PRICES, "batch_discount": 0.25}, "send": send, "model": "test-model"}
        config = config_file(tmp_path, {"curate": curate})
        assert generate(DEMO_CORPUS, "--out", tmp_path / "out", "--limit", 6, "--config", config, "--dry-run") == 0
        plans[send] = capsys.readouterr().out
    assert at_most(plans["batch"], "curate") == pytest.approx(at_most(plans["live"], "curate") / 4, rel=0.01)
    assert re.search(r"^  curate .* USD batch$", plans["batch"], re.M)
    assert "cost less: curate at 0.25 of its price" in plans["batch"]
    assert "batch" not in plans["live"]


def test_the_most_a_stage_can_cost_is_every_request_s_prompt_and_max_tokens():
    settings = {"corpus.path": str(DEMO_CORPUS), "corpus.limit": 3, "curate.samples": 3}
    config = load_config(None, {**settings, "curate.price": {"input": 1.0, "output": 2.0}})
    plan = plan_run(config)
    curate = next(stage for stage in plan.stages if stage.name == "curate")
    assert curate.requests == 9  # 3 documents, 3 samples each, each sends its prompt
    most = curate.max_cost
    assert (most.input_tokens, most.output_tokens) == (3 * curate.prompt_tokens, 9 * config.curate.sampling.max_tokens)
    assert most.amount == pytest.approx((most.input_tokens * 1.0 + most.output_tokens * 2.0) / 1e6)
    assert most.amount <= at_most(format_plan(plan), "curate")  # printed rounded up: still a bound


def test_the_dry_run_prices_only_the_priced_stages(tmp_path, capsys):
    config = config_file(tmp_path, {"rewrite": {"price": {"input": 2.0, "output": 6.0, "currency": "EUR"}}})
    out = tmp_path / "out"
    with TGITestServer() as server:
        args = [DEMO_CORPUS, "--out", out, "--endpoint", server.url, "--limit", 3, "--config", config, "--dry-run"]
        assert generate(*args) == 0
    plan = capsys.readouterr().out
    assert re.search(r"^  backtranslate .* -$", plan, re.M) and re.search(r"^  rewrite .*<= [\d.]+ EUR$", plan, re.M)
    assert re.search(r"^  cost, the priced stages \(rewrite\): at most [\d.]+ EUR$", plan, re.M)


# -- the dataset card --------------------------------------------------------------------------------


def test_the_dataset_card_says_what_the_run_cost(tmp_path):
    config = config_file(tmp_path, {name: {"price": PRICES} for name in STAGES})
    out, folder = tmp_path / "out", tmp_path / "ds"
    with TGITestServer() as server:
        assert generate(DEMO_CORPUS, "--out", out, "--endpoint", server.url, "--limit", 4, "--config", config) == 0
    assert main(["build", str(out), "--out", str(folder), "--license", "cc-by-4.0"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    card = (folder / "README.md").read_text()
    lines = [line for line in card.splitlines() if line.startswith("**What the run cost.**")]
    assert len(lines) == 1
    assert f"{money(stats['cost']['USD'], 'USD')} in all: backtranslate " in lines[0]
    assert "replies the request cache answered cost nothing" in lines[0]
