"""The report's figures: a sweep's metric (mean ± std) against its swept parameter, and an
Optuna study's objective per trial. matplotlib loads (through runtime.figures) when one is drawn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cifar_lab.reports.jobs import Group, ReportError, natural_key, varying_keys
from cifar_lab.reports.table import mean_std
from cifar_lab.reports.trials import SearchReport

# more settings than this are drawn as points without a legend (an Optuna search)
MAX_LINES = 8


def _as_float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def choose_x(groups: Sequence[Group], requested: str | None = None) -> str | None:
    """The swept parameter for the x axis: the requested one, else the numeric varying key
    with the most distinct values, else any varying key."""
    keys = varying_keys(groups)
    if requested:
        if requested not in keys:
            raise ReportError(f"--x {requested}: not a swept parameter here (swept: {', '.join(keys) or 'none'})")
        return requested

    def distinct(key: str) -> int:
        return len({dict(g.key).get(key) for g in groups})

    numeric = [k for k in keys if all(_as_float(dict(g.key).get(k)) is not None for g in groups)]
    candidates = numeric or keys
    return max(candidates, key=distinct) if candidates else None


def plot_figure(groups: Sequence[Group], metric: str = "test/acc", x_key: str | None = None) -> Any:
    """``metric`` (mean ± std) against the swept parameter, one line per other setting."""
    from cifar_lab.runtime.figures import new_figure

    x_key = choose_x(groups, x_key)
    others = [k for k in varying_keys(groups) if k != x_key]
    lines: dict[str, list[tuple[Any, float, float]]] = {}
    for group in groups:
        mean, std = mean_std(group.values(metric))
        if mean is None:
            continue
        settings = dict(group.key)
        label = " ".join(f"{k}={settings.get(k, '-')}" for k in others) or metric
        x_value = settings.get(x_key, "-") if x_key else "all jobs"
        lines.setdefault(label, []).append((x_value, mean, std))

    figure = new_figure(7, 4.5)
    ax = figure.add_subplot()
    numeric = x_key is not None and all(_as_float(x) is not None for pts in lines.values() for x, _, _ in pts)
    categories = sorted({x for pts in lines.values() for x, _, _ in pts}, key=natural_key)
    # an Optuna search makes one setting per trial: points, not a legend of a hundred lines
    many = len(lines) > MAX_LINES
    for label, points in sorted(lines.items()):
        points.sort(key=lambda p: _as_float(p[0]) if numeric else categories.index(p[0]))
        xs = [_as_float(p[0]) if numeric else categories.index(p[0]) for p in points]
        ax.errorbar(
            xs,
            [p[1] for p in points],
            yerr=[p[2] for p in points],
            marker="o",
            capsize=4,
            label=None if many else label,
            linestyle="none" if many else "-",
            color="tab:blue" if many else None,
            alpha=0.7 if many else 1.0,
        )
    if numeric:
        values = [_as_float(x) for x in categories]
        if min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_xscale("log")
    else:
        ax.set_xticks(range(len(categories)), categories)
    ax.set_xlabel(x_key or "")
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    if many:
        ax.set_title(f"{len(lines)} settings of {', '.join(others)}", fontsize=8)
    elif lines:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, f"no completed job logged {metric}", ha="center", va="center", transform=ax.transAxes)
    return figure


def plot_trials(report: SearchReport) -> Any:
    """Objective per trial number: complete trials as dots with the best-so-far line,
    pruned ones as crosses at their last reported value (kept apart from the line)."""
    from cifar_lab.runtime.figures import new_figure

    figure = new_figure(7, 4.5)
    ax = figure.add_subplot()
    maximize = report.direction == "maximize"
    done = sorted((r.number, r.value) for r in report.rows if r.state == "complete" and r.value is not None)
    pruned = sorted((r.number, r.value) for r in report.rows if r.state == "pruned" and r.value is not None)
    if done:
        ax.plot([n for n, _ in done], [v for _, v in done], "o", color="tab:blue", label="complete")
        best, line = None, []
        for _, value in done:
            best = value if best is None else (max(best, value) if maximize else min(best, value))
            line.append(best)
        ax.step([n for n, _ in done], line, where="post", color="tab:red", label="best so far")
    if pruned:
        ax.plot([n for n, _ in pruned], [v for _, v in pruned], "x", color="tab:gray", label="pruned (last report)")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective")
    ax.grid(alpha=0.3)
    ax.set_title(f"study {report.study_name}", fontsize=9)
    if done or pruned:
        ax.legend(fontsize=8)
    return figure
