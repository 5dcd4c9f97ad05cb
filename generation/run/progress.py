"""One progress bar per stage, the same for both executors, telling the truth about each stage.

A stage's bar counts the documents that finished it, out of the documents that will enter it: the
first bar's total is the corpus (once counted); every later bar's total is what the stage before kept
so far, so it grows while that stage runs and is exact once it is done. A finished run therefore ends
every bar at 100 %, whatever the earlier stages rejected. Beside the counts each bar shows what
`StageStats.progress_postfix` says (requests and tokens per second over the stage's own time, retries,
rejects: the figures `stats.json` holds; the money a priced stage has spent so far, from the tokens it
was charged for (`run/money.py`); the current limit of requests in flight at the stage's
endpoints; and a slow server, named), refreshed at most twice a second and
once more, from the final counters, when the bars close. The local engine advances a bar per document,
the Ray driver per finished block.
"""

from __future__ import annotations

import time

from tqdm.auto import tqdm

from bft.generation.run.money import money
from bft.generation.run.stats import StageStats

REFRESH_SECONDS = 0.5


class StageBars:
    """A bar per stage name, in order; `enabled=False` makes every call a no-op."""

    def __init__(self, names: list[str], total: int | None = None, enabled: bool = True):
        self.names = list(names)
        self.bars: dict[str, tqdm] = {}
        self.kept = dict.fromkeys(self.names, 0)
        if enabled:
            for line, name in enumerate(self.names):
                first = line == 0
                self.bars[name] = tqdm(
                    total=total if first else 0, desc=f"{name:>13}", position=line, leave=True, unit="doc"
                )
        self._refreshed: dict[str, float] = {}
        self._limits: dict[str, str] = {}  # each stage's endpoints' current limits

    def advance(
        self, name: str, entered: int = 1, kept: int = 0, stats: StageStats | None = None, limit: str | None = None
    ) -> None:
        """`entered` more documents finished `name`, `kept` of them go on to the next stage; with `stats`,
        refresh the bar's figures (at most twice a second), with the endpoints' current `limit`."""
        self.kept[name] = self.kept.get(name, 0) + kept
        bar = self.bars.get(name)
        if bar is None:
            return
        bar.update(entered)
        following = self._next(name)
        if following is not None and kept:
            following.total = self.kept[name]
            following.refresh()
        now = time.monotonic()
        if limit is not None:
            self._limits[name] = limit
        if stats is not None and now - self._refreshed.get(name, 0.0) > REFRESH_SECONDS:
            self._refreshed[name] = now
            bar.set_postfix(self._postfix(name, stats), refresh=False)

    def _postfix(self, name: str, stats: StageStats) -> dict:
        postfix = stats.progress_postfix()
        cost = stats.cost()
        if cost is not None:
            postfix["spent"] = money(cost.amount, cost.currency)
        if name in self._limits:
            postfix["limit"] = self._limits[name]
        return postfix

    def _next(self, name: str) -> tqdm | None:
        index = self.names.index(name)
        return self.bars.get(self.names[index + 1]) if index + 1 < len(self.names) else None

    def set_total(self, total: int | None) -> None:
        """The first bar's total, known once the corpus is counted (hence an ETA)."""
        bar = self.bars.get(self.names[0]) if self.names else None
        if total is None or bar is None or bar.disable:
            return
        bar.total = total
        bar.refresh()

    def close(self, final: dict[str, StageStats] | None = None) -> None:
        """Close the bars, their figures refreshed from the final counters (what `stats.json` says)."""
        for name, bar in self.bars.items():
            if final is not None and name in final:
                bar.set_postfix(self._postfix(name, final[name]), refresh=False)
            bar.refresh()
            bar.close()
