"""The interface of an exported model, the names a server relies on (no torch: `--help` reads them)."""

from __future__ import annotations

FORMATS = ("onnx", "torchscript")
# what the exported graph takes: uint8 in [0, 255] (as images are stored) or float32 in [0, 1]
INPUT_DTYPES = ("uint8", "float")
# ONNX opset of the exported graph: torch 2.14's default, run by onnxruntime >= 1.17
ONNX_OPSET = 20
INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "probs")
# the metadata's name inside a TorchScript file (torch.jit.load(..., _extra_files={TORCHSCRIPT_EXTRA: ""}))
TORCHSCRIPT_EXTRA = "cifar_lab.json"
