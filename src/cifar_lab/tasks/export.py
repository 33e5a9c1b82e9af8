"""`cifar-lab export --ckpt PATH --format onnx|torchscript`: a trained net as one self-contained file.

The exported model takes raw NCHW images (uint8 in [0, 255] by default, or float32 in [0, 1]
with ``--input float``), normalizes them with the checkpoint's mean/std, runs the net in eval
mode with the checkpoint's test-time augmentation (what eval scores), and returns logits and
probabilities. Beside it, ``<out>.json`` holds the class names, the input spec, mean/std and the
source checkpoint (the same JSON sits inside the file: ONNX metadata_props, a TorchScript extra file).
"""

from __future__ import annotations

import argparse
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifar_lab.errors import CifarLabError, one_line
from cifar_lab.runtime.export_spec import FORMATS, INPUT_DTYPES, INPUT_NAME, ONNX_OPSET, OUTPUT_NAMES
from cifar_lab.tasks.predict import IMAGE_SIZE

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
# images the exported file is checked on against torch: odd sizes, so a baked-in batch size shows
VERIFY_BATCHES = (1, 7)
# |logit difference| allowed between the exported file and torch: atol + rtol * max |logit|
VERIFY_ATOL, VERIFY_RTOL = 1e-4, 1e-3


@dataclass
class Exported:
    path: Path
    metadata_path: Path
    metadata: dict[str, Any]


def export_checkpoint(
    ckpt: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike | None = None,
    input_dtype: str = "uint8",
    tta_level: int | None = None,
) -> Exported:
    """Export ``ckpt`` to ``out`` (default: beside it, .onnx / .pt) and ``out`` with .json; nothing
    is written unless the exported file, run back, agrees with torch."""
    from cifar_lab.config.module import TTA_LEVELS

    if fmt not in FORMATS:
        raise CifarLabError(f"--format {fmt}: not one of {' | '.join(FORMATS)}")
    if input_dtype not in INPUT_DTYPES:
        raise CifarLabError(f"--input {input_dtype}: not one of {' | '.join(INPUT_DTYPES)}")
    if tta_level is not None and tta_level not in TTA_LEVELS:
        raise CifarLabError(f"--tta-level {tta_level}: not one of {TTA_LEVELS} (0 none, 1 mirror, 2 mirror + shifts)")
    ckpt = Path(ckpt)
    out = Path(out) if out is not None else ckpt.with_suffix(SUFFIXES[fmt])
    metadata_path = out.with_suffix(".json")
    if metadata_path == out:
        raise CifarLabError(f"--out {out}: the metadata goes to <out>.json, so the model needs another suffix")
    for path in (out, metadata_path):
        _check_writable(path)

    from cifar_lab.runtime import exporters
    from cifar_lab.runtime.checkpoints.model import load_trained

    exporters.check_available(fmt)
    loaded = load_trained(ckpt)
    level = int(loaded.hparams.get("tta_level", 0)) if tta_level is None else tta_level
    metadata = _metadata(fmt, ckpt, loaded, input_dtype, level)
    model, example = _serving_model(loaded, input_dtype, level)
    data = exporters.serialize(fmt, model, example, metadata)
    metadata["verified"] = _verify(fmt, data, model, input_dtype)
    metadata["file"] = out.name
    _write(out, data, metadata_path, metadata)
    return Exported(out, metadata_path, metadata)


def _check_writable(path: Path) -> None:
    """Fail before the slow export when ``path`` cannot be written (its folder is a file, read-only, ...)."""
    if path.is_dir():
        raise CifarLabError(f"--out {path}: is a folder; give a file name (e.g. {path / 'model.onnx'})")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # atomic_write_bytes creates the missing folders
    if not folder.is_dir():
        raise CifarLabError(f"cannot write {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CifarLabError(f"cannot write {path}: {folder} is not writable")


def _serving_model(loaded, input_dtype: str, tta_level: int):
    """The ServingModel of the checkpoint and an example batch to trace it with."""
    import torch

    from cifar_lab.runtime.serving import ServingModel

    model = ServingModel(loaded.net, loaded.mean, loaded.std, input_dtype, tta_level)
    example = _images(2, input_dtype, seed=0)
    return model, torch.from_numpy(example)


def _images(count: int, input_dtype: str, seed: int):
    """``count`` random images of the input spec (numpy: what a server holds)."""
    import numpy as np

    pixels = np.random.default_rng(seed).integers(0, 256, size=(count, len("RGB"), IMAGE_SIZE, IMAGE_SIZE))
    return pixels.astype(np.uint8) if input_dtype == "uint8" else (pixels / 255.0).astype(np.float32)


def _verify(fmt: str, data: bytes, model, input_dtype: str) -> dict[str, Any] | None:
    """Run the serialized file on a few random images; ExportError when it disagrees with torch."""
    import numpy as np
    import torch

    from cifar_lab.runtime import exporters

    runtime = exporters.runtime_name(fmt)
    if runtime is None:
        return None  # reported by run(): the file is written unverified
    worst, count = 0.0, 0
    for seed, batch in enumerate(VERIFY_BATCHES, start=1):
        images = _images(batch, input_dtype, seed)
        with torch.inference_mode():
            want_logits, want_probs = (t.numpy() for t in model(torch.from_numpy(images)))
        try:
            logits, probs = exporters.run_exported(fmt, data, images)
        except Exception as err:  # the runtime refuses the file: a broken export
            raise exporters.ExportError(f"{runtime} cannot run the exported {fmt} file ({one_line(err)})") from None
        diff = float(np.abs(logits - want_logits).max())
        tolerance = VERIFY_ATOL + VERIFY_RTOL * float(np.abs(want_logits).max())
        if logits.shape != want_logits.shape or diff > tolerance or np.abs(probs - want_probs).max() > tolerance:
            raise exporters.ExportError(
                f"the exported {fmt} file disagrees with torch on {batch} image(s) (max |logit difference| "
                f"{diff:.3g} > {tolerance:.3g}); nothing written"
            )
        worst, count = max(worst, diff), count + batch
    return {"runtime": runtime, "images": count, "max_abs_logit_diff": worst}


def _metadata(fmt: str, ckpt: Path, loaded, input_dtype: str, tta_level: int) -> dict[str, Any]:
    """What a server needs beside the file: the classes, the input spec, and where it came from."""
    import torch

    import cifar_lab

    value_range = [0, 255] if input_dtype == "uint8" else [0.0, 1.0]
    metadata: dict[str, Any] = {
        "format": fmt,
        "classes": loaded.classes,
        "input": {
            "name": INPUT_NAME,
            "dtype": "uint8" if input_dtype == "uint8" else "float32",
            "shape": ["N", len(loaded.mean), IMAGE_SIZE, IMAGE_SIZE],
            "layout": "NCHW, RGB",
            "range": value_range,
        },
        "outputs": {
            OUTPUT_NAMES[0]: "(N, classes) float32 logits (averaged over the TTA views)",
            OUTPUT_NAMES[1]: "(N, classes) float32 softmax of the logits",
        },
        "mean": loaded.mean,
        "std": loaded.std,
        "normalization": f"inside the graph: ({'x / 255' if input_dtype == 'uint8' else 'x'} - mean) / std",
        "tta_level": tta_level,
        "model": (loaded.raw["cifar_lab"]["model_config"] or {}).get("_target_"),
        "source_checkpoint": str(ckpt.resolve()),
        "source_sha256": _sha256(ckpt),
        "torch": torch.__version__,
        "cifar_lab": cifar_lab.__version__,
    }
    if fmt == "onnx":
        metadata["opset"] = ONNX_OPSET
    return metadata


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write(out: Path, data: bytes, metadata_path: Path, metadata: dict[str, Any]) -> None:
    """The model, then its JSON, each atomically; a failed JSON takes the new model with it."""
    from cifar_lab.runtime.io import atomic_write_bytes, write_json_atomic

    try:
        atomic_write_bytes(out, data)
    except OSError as err:
        raise CifarLabError(f"cannot write {out} ({one_line(err)})") from None
    try:
        write_json_atomic(metadata_path, metadata)
    except OSError as err:
        out.unlink(missing_ok=True)
        raise CifarLabError(f"cannot write {metadata_path} ({one_line(err)}); {out} removed") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ckpt", required=True, help="a checkpoint written by cifar_lab training (e.g. checkpoints/last.ckpt)"
    )
    # checked in export_checkpoint, not by argparse: a wrong value is one error line like the others
    parser.add_argument("--format", required=True, metavar="|".join(FORMATS), help="the file format")
    parser.add_argument(
        "--out", default=None, help="the model file (default: beside the checkpoint, .onnx / .pt); its JSON: <out>.json"
    )
    parser.add_argument(
        "--input",
        default="uint8",
        metavar="|".join(INPUT_DTYPES),
        help="what the model takes: uint8 images in [0, 255] (default) or float32 in [0, 1]; NCHW, RGB",
    )
    parser.add_argument(
        "--tta-level",
        type=int,
        default=None,
        help="test-time augmentation inside the graph: 0 none, 1 mirror, 2 mirror + shifts "
        "(default: the checkpoint's, what eval scores)",
    )


def run(args: argparse.Namespace) -> int:
    exported = export_checkpoint(args.ckpt, args.format, args.out, args.input, args.tta_level)
    meta = exported.metadata
    spec = meta["input"]
    opset = f", opset {meta['opset']}" if "opset" in meta else ""
    print(
        f"wrote {exported.path} ({meta['format']}{opset}): "
        f"{spec['dtype']} ({', '.join(map(str, spec['shape']))}) in {spec['range']} -> logits, probs over "
        f"{len(meta['classes'])} classes, "
        f"tta_level {meta['tta_level']}"
    )
    print(f"wrote {exported.metadata_path} (class names, input spec, mean/std, source checkpoint)")
    verified = meta["verified"]
    if verified is None:
        print("not verified: onnxruntime is not installed (pip install 'cifar_lab[export]')")
    else:
        print(
            f"verified with {verified['runtime']}: max |logit difference| to torch "
            f"{verified['max_abs_logit_diff']:.2g} on {verified['images']} images"
        )
    return 0
