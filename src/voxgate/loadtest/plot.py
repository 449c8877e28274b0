"""The load test's picture: concurrency, first-response p95, the gateway's RSS, CPU and fds over time, as
a PNG. matplotlib is an optional extra (`pip install 'voxgate[loadtest]'`), imported only here and only
when a plot is asked for, with the Agg backend (no display): a gateway never needs it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from voxgate.loadtest.report import Sample

__all__ = ["PlotUnavailable", "write_plot"]


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def write_plot(samples: Sequence[Sample], path: Path, title: str) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable("no plot: matplotlib is not installed (pip install 'voxgate[loadtest]')") from exc

    t = [s.t for s in samples]
    panels: list[tuple[str, list[float | None], str]] = [
        ("calls live", [float(s.live) for s in samples], "tab:blue"),
        ("first response p95 (ms)", [s.first_response_p95_ms for s in samples], "tab:orange"),
    ]
    if any(s.rss_mb is not None for s in samples):
        panels += [("gateway RSS (MB)", [s.rss_mb for s in samples], "tab:green"),
                   ("gateway CPU (% of a core)", [None if s.cpu is None else s.cpu * 100 for s in samples], "tab:red")]
    if any(s.fds is not None for s in samples):
        panels.append(("gateway open fds", [None if s.fds is None else float(s.fds) for s in samples], "tab:purple"))
    if any(s.tasks is not None for s in samples):
        panels.append(("gateway asyncio tasks", [None if s.tasks is None else float(s.tasks) for s in samples],
                       "tab:brown"))
    figure, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(9, 1.9 * len(panels) + 0.8), squeeze=False)
    for ax, (label, values, colour) in zip(axes[:, 0], panels, strict=True):
        points = [(x, y) for x, y in zip(t, values, strict=True) if y is not None]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], color=colour, linewidth=1.2)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(0, max([p[1] for p in points], default=1.0) * 1.15 or 1.0)  # a flat line stays in view
    axes[-1, 0].set_xlabel("seconds since the run began")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
