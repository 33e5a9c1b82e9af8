"""`cifar-lab predict --ckpt PATH IMAGES...`: classify your own image files.

Any size and mode is accepted: each image is decoded as training data is (converted to RGB and
resized to the net's 32x32 by ``cifar_lab.data.decode``), then normalized with the training
statistics stored in the checkpoint.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifar_lab.errors import CifarLabError

IMAGE_SIZE = 32


class ImageError(CifarLabError):
    """An input image is missing or cannot be decoded."""


@dataclass
class Prediction:
    path: Path
    top: list[tuple[str, float]]  # (class, probability), most likely first


def load_image(path: str | os.PathLike, size: int = IMAGE_SIZE) -> Any:
    """(H, W, 3) uint8 array of the image, resized to size x size exactly as training data is
    (``cifar_lab.data.decode``: the same RGB conversion and the same antialiased resampling)."""
    from cifar_lab.data.decode import DECODE_ERRORS, decode_image

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        return decode_image(path, size)[0]
    except DECODE_ERRORS as err:
        raise ImageError(f"cannot read image {path} ({err.__class__.__name__})") from None


def predict_files(
    ckpt: str | os.PathLike, images: Sequence[str | os.PathLike], top_k: int = 1, device: str = "cpu"
) -> list[Prediction]:
    """Top-k classes and probabilities of each image, from the checkpoint alone."""
    import numpy as np
    import torch

    from cifar_lab.data.loader import normalize
    from cifar_lab.runtime.checkpoints.model import load_trained

    try:
        torch_device = torch.device(device)
    except RuntimeError:
        raise CifarLabError(f"--device {device}: not a torch device (cpu, cuda, cuda:1, mps, ...)") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise CifarLabError(f"--device {device}: no CUDA GPU here (use --device cpu)")
    loaded = load_trained(ckpt)
    if top_k > len(loaded.classes):  # a typed --top is never cut down silently
        raise CifarLabError(
            f"--top {top_k} is more than the checkpoint's {len(loaded.classes)} classes; use at most {len(loaded.classes)}"
        )
    arrays = np.stack([load_image(path) for path in images])  # every image read before any work
    net = loaded.net.to(device)
    batch = normalize(
        torch.from_numpy(arrays).to(device),
        torch.tensor(loaded.mean, device=device),
        torch.tensor(loaded.std, device=device),
    )
    with torch.inference_mode():
        probs = net(batch).float().softmax(-1).cpu()
    values, indices = probs.topk(max(1, top_k), dim=-1)
    return [
        Prediction(Path(path), [(loaded.classes[int(i)], float(p)) for p, i in zip(v, ix)])
        for path, v, ix in zip(images, values, indices)
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ckpt", required=True, help="a checkpoint written by cifar_lab training (e.g. checkpoints/last.ckpt)"
    )
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...; any size)")
    parser.add_argument("--top", type=int, default=1, help="print the k most likely classes (default 1)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise CifarLabError(f"--top {args.top} must be at least 1")
    for prediction in predict_files(args.ckpt, args.images, args.top, args.device):
        answers = "  ".join(f"{name} {prob:.3f}" for name, prob in prediction.top)
        print(f"{prediction.path}\t{answers}")
    return 0
