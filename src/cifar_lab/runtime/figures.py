"""Matplotlib figures shared by the callbacks, eval, report and notebooks.

Figures are built with ``matplotlib.figure.Figure`` and an Agg canvas, never pyplot: no
global backend is switched, no window opens, and nothing leaks between figures.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize, PowerNorm
from matplotlib.figure import Figure


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG bytes (for an atomic write)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


# up to this many classes every cell of the confusion matrix carries its count (CIFAR-10's 10)
ANNOTATED_CLASSES = 20


def confusion_figure(matrix: torch.Tensor, classes: Sequence[str]) -> Figure:
    """Row-normalized confusion matrix (rows: true class).

    Up to ANNOTATED_CLASSES classes each cell has its count written in. Beyond (CIFAR-100), counts
    would be unreadable specks, so the cells carry colour only, every class keeps its label in
    small type on a grid sized to it (~17 inches at 100), faint lines every 10 classes guide the
    eye along a row, and the colour scale is a square root: the few-percent rates of a confusion
    between two look-alike classes would otherwise be near white beside the diagonal.
    """
    counts = matrix.double()
    rates = counts / counts.sum(1, keepdim=True).clamp(min=1)
    k = len(classes)
    annotated = k <= ANNOTATED_CLASSES
    size = max(4.0, 0.55 * k + 2) if annotated else 0.16 * k + 2.5
    figure = new_figure(size, size)
    ax = figure.add_subplot()
    norm = Normalize(vmin=0, vmax=1) if annotated else PowerNorm(gamma=0.5, vmin=0, vmax=1)
    image = ax.imshow(rates.numpy(), cmap="Blues", norm=norm, interpolation="nearest")
    scale = "" if annotated else " (square-root scale)"
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=f"fraction of the true class{scale}")
    if annotated:
        ax.set_xticks(range(k), classes, rotation=45, ha="right")
        ax.set_yticks(range(k), classes)
    else:
        ax.set_xticks(range(k), classes, rotation=90, fontsize=6)
        ax.set_yticks(range(k), classes, fontsize=6)
        ax.tick_params(length=2, pad=1)
        ax.set_xticks([i - 0.5 for i in range(10, k, 10)], minor=True)
        ax.set_yticks([i - 0.5 for i in range(10, k, 10)], minor=True)
        ax.tick_params(which="minor", length=0)
        ax.grid(which="minor", color="0.75", linewidth=0.5)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if annotated:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    int(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    accuracy = float(matrix.diag().sum() / matrix.sum().clamp(min=1))
    ax.set_title(f"confusion matrix (accuracy {accuracy:.3f})")
    return figure


def image_grid_figure(pixels: torch.Tensor, titles: Sequence[str], columns: int = 8) -> Figure:
    """A grid of (N, C, H, W) images in [0, 1], each with a short title."""
    n = max(len(pixels), 1)
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    figure = new_figure(1.6 * columns, 1.8 * rows)
    for index in range(len(pixels)):
        ax = figure.add_subplot(rows, columns, index + 1)
        ax.imshow(pixels[index].permute(1, 2, 0).float().numpy(), interpolation="nearest")
        ax.set_title(titles[index], fontsize=7)
        ax.axis("off")
    return figure


def misclassified_figure(
    pixels: torch.Tensor,
    labels: torch.Tensor,
    predicted: torch.Tensor,
    confidence: torch.Tensor,
    classes: Sequence[str],
) -> Figure:
    """The most confident mistakes: 'predicted p (true)' above each image."""
    titles = [
        f"{classes[int(p)]} {float(c):.2f}\n(true: {classes[int(t)]})" for t, p, c in zip(labels, predicted, confidence)
    ]
    figure = image_grid_figure(pixels, titles)
    figure.suptitle("most confident mistakes: predicted, probability (true class)", fontsize=9)
    return figure


def lr_find_figure(lrs: Sequence[float], losses: Sequence[float], suggestion: float | None, mode: str) -> Figure:
    """tune=lr_find's curve: smoothed training loss against optimizer.lr (log x for an
    exponential sweep), the suggested lr marked and named."""
    figure = new_figure(6, 4)
    ax = figure.add_subplot()
    ax.plot(lrs, losses, color="tab:blue")
    if mode == "exponential":
        ax.set_xscale("log")
    if suggestion is not None:
        at = min(range(len(lrs)), key=lambda i: abs(lrs[i] - suggestion))
        ax.axvline(suggestion, color="tab:red", linestyle="--", linewidth=1)
        ax.plot([lrs[at]], [losses[at]], marker="o", markersize=8, color="tab:red")
        ax.set_title(f"suggested optimizer.lr={suggestion:.3g} (steepest descent)")
    else:
        ax.set_title("no suggestion: too few finite points")
    ax.set_xlabel("optimizer.lr")
    ax.set_ylabel("training loss (smoothed)")
    ax.grid(True, which="both", alpha=0.3)
    return figure
