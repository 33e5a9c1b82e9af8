"""A ServingModel as the bytes of an ONNX or TorchScript file, and those bytes run back.

Each format is serialized into memory, run again on a few images and compared with torch
before anything is written (``tasks.export`` writes the file atomically afterwards), so a file
that disagrees with the net never reaches the disk.
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

import numpy as np
import torch

from cifar_lab.errors import CifarLabError, one_line
from cifar_lab.runtime.export_spec import INPUT_NAME, ONNX_OPSET, OUTPUT_NAMES, TORCHSCRIPT_EXTRA

# torch 2.14 warns on every torch.jit call (trace, script, save, load); the README says it once
_JIT_DEPRECATED = r"`torch\.jit\.\w+` is deprecated"
EXTRA_HINT = "pip install 'cifar_lab[export]'"


class ExportError(CifarLabError):
    """The net cannot be exported, or the exported file disagrees with it."""


def serialize(fmt: str, model: torch.nn.Module, example: torch.Tensor, metadata: dict[str, Any]) -> bytes:
    """The file's bytes, with ``metadata`` inside it (ONNX metadata_props, a TorchScript extra file)."""
    try:
        if fmt == "onnx":
            return _onnx_bytes(model, example, metadata)
        return _torchscript_bytes(model, example, metadata)
    except ExportError:
        raise
    except Exception as err:  # the exporter's own failure: an op it cannot translate, ...
        raise ExportError(f"torch cannot export this net to {fmt} ({type(err).__name__}: {one_line(err)})") from None


def check_available(fmt: str) -> None:
    """One line naming the extra when the format's exporter is not installed (before any work)."""
    if fmt != "onnx":
        return  # TorchScript is part of torch
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (torch.onnx.export(dynamo=True) translates with it)
    except ImportError:
        raise ExportError(f"--format onnx needs the export extra: {EXTRA_HINT}") from None


def runtime_name(fmt: str) -> str | None:
    """The runtime that verifies the format's file ("onnxruntime 1.32.0"), None when it is missing."""
    if fmt == "torchscript":
        return f"torch.jit {torch.__version__}"
    try:
        import onnxruntime
    except ImportError:
        return None
    return f"onnxruntime {onnxruntime.__version__}"


def run_exported(fmt: str, data: bytes, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, probs) of the serialized model on ``images``, as a server would run it."""
    if fmt == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: no graph-optimizer chatter on the console
        session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        logits, probs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
        return logits, probs
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_JIT_DEPRECATED, category=FutureWarning)
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    with torch.inference_mode():
        logits, probs = module(torch.from_numpy(images))
    return logits.numpy(), probs.numpy()


# -- ONNX -------------------------------------------------------------------------------------
def _onnx_bytes(model: torch.nn.Module, example: torch.Tensor, metadata: dict[str, Any]) -> bytes:
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's internal deprecations are not the user's to fix
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=ONNX_OPSET,
            verbose=False,
        )
    proto = program.model_proto
    onnx.helper.set_model_props(proto, _flat_metadata(metadata))
    proto.doc_string = "cifar_lab classifier: raw NCHW images in, logits and probs out (see metadata_props)"
    return proto.SerializeToString()


def _flat_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """ONNX metadata_props are string pairs: the whole JSON under "cifar_lab", the main keys beside it."""
    flat = {"cifar_lab": json.dumps(metadata, sort_keys=True)}
    for key in ("classes", "mean", "std", "tta_level", "source_checkpoint"):
        value = metadata[key]
        flat[key] = value if isinstance(value, str) else json.dumps(value)
    flat["input_dtype"] = metadata["input"]["dtype"]
    return flat


# -- TorchScript ----------------------------------------------------------------------------
class _DtypeGuard(torch.nn.Module):
    """Refuses a tensor of the other dtype: the traced graph would scale it wrongly, silently."""

    def __init__(self, traced: torch.nn.Module, expects_uint8: bool) -> None:
        super().__init__()
        self.traced = traced
        self.expects_uint8 = expects_uint8

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.expects_uint8 and images.dtype != torch.uint8:
            raise RuntimeError("this model takes uint8 images in [0, 255] (N, 3, H, W)")
        if not self.expects_uint8 and images.dtype != torch.float32:
            raise RuntimeError("this model takes float32 images in [0, 1] (N, 3, H, W)")
        return self.traced(images)


def _torchscript_bytes(model: torch.nn.Module, example: torch.Tensor, metadata: dict[str, Any]) -> bytes:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_JIT_DEPRECATED, category=FutureWarning)
        # no check_trace: verification runs the saved file itself, the stronger check
        traced = torch.jit.trace(model, example, check_trace=False)
        scripted = torch.jit.script(_DtypeGuard(traced, example.dtype == torch.uint8))
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer, _extra_files={TORCHSCRIPT_EXTRA: json.dumps(metadata, sort_keys=True)})
    return buffer.getvalue()
