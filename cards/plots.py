"""PNG figures for the dataset card: curation scores, rejects by reason, lengths. Needs matplotlib."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def bar_chart(path: Path, counts: dict[str, int], title: str, xlabel: str, ylabel: str = "rows") -> Path:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.2), dpi=100)
    labels = list(counts)
    axes.bar(range(len(labels)), [counts[k] for k in labels], color="#4c72b0")
    axes.set_xticks(range(len(labels)), labels, rotation=30 if max(map(len, labels), default=0) > 6 else 0, ha="right")
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    plt.close(figure)
    return path


def shared_bins(series: dict[str, list[int]], count: int = 30) -> list[float]:
    """One set of bin edges over every series' values, so each config's bars sit on the same axis: with
    bins of their own, a config of short texts is a sliver beside one of long texts, or hidden by it."""
    values = [v for vs in series.values() for v in vs]
    if not values:
        return []
    low, high = min(values), max(values)
    if low == high:
        return [low - 0.5, high + 0.5]
    step = (high - low) / count
    return [low + step * i for i in range(count)] + [high]


def histogram(path: Path, series: dict[str, list[int]], title: str, xlabel: str) -> Path:
    """Overlaid histograms of `series` on shared bins (`shared_bins`)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.2), dpi=100)
    bins = shared_bins(series)
    for label, values in series.items():
        if values:
            axes.hist(values, bins=bins, alpha=0.55, label=label, histtype="stepfilled", edgecolor="black")
    axes.set(title=title, xlabel=xlabel, ylabel="rows")
    if any(series.values()):
        axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    plt.close(figure)
    return path


def score_counts(scores: list[int | None]) -> dict[str, int]:
    """Rows per curation score 1-5, plus those without a parseable score."""
    counted = Counter(scores)
    table = {str(k): counted.get(k, 0) for k in range(1, 6)}
    table["none"] = counted.get(None, 0)
    return table
