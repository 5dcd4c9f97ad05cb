"""One progress bar per stage, the same for both executors.

The local engine advances a stage's bar per document; the Ray driver per finished block. Bars show
done/total, rate and ETA, and beside them what `StageStats.progress_postfix` says (requests and
tokens per second, retries, rejects), refreshed at most twice a second.
"""

from __future__ import annotations

import time

from tqdm.auto import tqdm

from bft.generation.run.stats import StageStats

REFRESH_SECONDS = 0.5


class StageBars:
    """A bar per stage name, in order; `enabled=False` makes every call a no-op."""

    def __init__(self, names: list[str], total: int | None = None, enabled: bool = True):
        self.bars: dict[str, tqdm] = {}
        if enabled:
            for line, name in enumerate(names):
                self.bars[name] = tqdm(total=total, desc=f"{name:>13}", position=line, leave=True, unit="doc")
        self._refreshed: dict[str, float] = {}
        self._started = time.monotonic()

    def restart_clock(self) -> None:
        self._started = time.monotonic()

    def update(self, name: str, n: int = 1, stats: StageStats | None = None) -> None:
        """Advance `name` by `n` documents; with `stats`, refresh its figures (at most twice a second)."""
        bar = self.bars.get(name)
        if bar is None:
            return
        bar.update(n)
        now = time.monotonic()
        if stats is not None and now - self._refreshed.get(name, 0.0) > REFRESH_SECONDS:
            self._refreshed[name] = now
            bar.set_postfix(stats.progress_postfix(now - self._started), refresh=False)

    def set_total(self, total: int | None) -> None:
        """Give every still open bar its total (known once the corpus is counted), hence an ETA."""
        if total is None:
            return
        for bar in self.bars.values():
            if not bar.disable:  # still open
                bar.total = total
                bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
