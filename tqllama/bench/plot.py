"""PNG plots of a sweep: quality against bits per value, speed against KV depth.

matplotlib is the optional `plot` extra: imported only here, only when plotting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqllama.bench.store import RunRecord
from tqllama.bench.table import PairRow, summarize
from tqllama.errors import TqError


def _pyplot() -> Any:
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise TqError("plotting needs matplotlib: pip install 'tqllama[plot]'") from None
    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    return plt


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (fewer bits and lower KLD), by bits."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], p[1])):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return front


def _kld_plot(plt: Any, rows: list[PairRow], path: Path) -> bool:
    # f16/f16 against its own base only shows the noise floor of the stored logits
    # (~1e-6); on a log axis it would squeeze the quantized types into one decade.
    points = [(r.bits_mean, r.kld_mean.value, r.pair.label) for r in rows
              if r.bits_mean is not None and r.bits_mean < 16 and r.kld_mean is not None
              and r.kld_mean.value > 0]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter([p[0] for p in points], [p[1] for p in points], color="tab:blue", zorder=3)
    for x, y, label in points:
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    front = pareto_front([(x, y) for x, y, _ in points])
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:red",
            label="Pareto front", zorder=2)
    ax.scatter([p[0] for p in front], [p[1] for p in front], facecolors="none",
               edgecolors="tab:red", s=120, zorder=4)
    ax.set_yscale("log")
    ax.set_xlabel("bits per value (mean of K and V)")
    ax.set_ylabel("mean KL divergence vs f16 cache")
    ax.set_title("KV-cache quality against size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _speed_plot(plt: Any, rows: list[PairRow], kind: str, path: Path) -> bool:
    fig, ax = plt.subplots(figsize=(7, 5))
    drawn = False
    for row in rows:
        series = sorted((depth, s.avg_ts) for (test, depth), s in row.speed.items()
                        if test.startswith(kind) and "+" not in test)
        if series:
            ax.plot([d for d, _ in series], [t for _, t in series], marker="o",
                    label=row.pair.label)
            drawn = True
    if drawn:
        ax.set_xlabel("KV depth (tokens already in the cache)")
        ax.set_ylabel(f"{kind} tokens/s")
        ax.set_title("prompt processing (pp)" if kind == "pp" else "generation (tg)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


def plot(records: list[RunRecord], out: Path) -> list[Path]:
    """Write kld_vs_bits.png, tg_vs_depth.png and pp_vs_depth.png; the files written."""
    plt = _pyplot()
    rows = summarize(records, baseline=None)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if _kld_plot(plt, rows, out / "kld_vs_bits.png"):
        written.append(out / "kld_vs_bits.png")
    for kind in ("tg", "pp"):
        path = out / f"{kind}_vs_depth.png"
        if _speed_plot(plt, rows, kind, path):
            written.append(path)
    if not written:
        raise TqError("nothing to plot: these results hold no KLD or speed numbers")
    return written
