"""Checkpoint files: written atomically, read without executing code, free of absolute paths.

* **Atomic writes.** Lightning's own writer goes through fsspec, which stages the file in the
  system temp folder and *moves* it: across file systems that is a copy into the final name,
  so a kill mid-copy leaves a torn ``last.ckpt``. :class:`SafeCheckpointIO` writes a temp file
  next to the target, fsyncs it and renames it (``cifar_lab.runtime.io.atomic_write_bytes``).
* **Safe reads.** Every load is ``torch.load(weights_only=True)``: only tensors, numbers,
  strings and plain containers (torch's weights-only allow-list, nothing added) are rebuilt, so
  a crafted pickle cannot run code. A refused, truncated or foreign file is one
  :class:`CheckpointError` line.
* **No absolute paths.** Lightning records where it saved the best/last checkpoints; those
  paths under the run folder are stored as ``<run>/...`` and mapped back on load to the folder
  the checkpoint lies in, so checkpoints name no user folders and survive a move.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from cifar_lab.errors import CheckpointError
from cifar_lab.runtime.io import atomic_write_bytes
from cifar_lab.training.timing import DeviceClock

RUN_MARKER = "<run>"
_RUN_DIR_KEY = "cifar_lab_run_dir"  # the run folder, relative to the checkpoint's folder


def _refused_global(exc: BaseException) -> str | None:
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc)) or re.search(r"GLOBAL ([\w.]+)", str(exc))
    return match.group(1) if match else None


def _corrupt(path: Path) -> CheckpointError:
    """torch's own text (a paragraph about its zip reader, or "[Errno 22] Invalid argument")
    says nothing a user can act on: the line says what the file is and what to use instead."""
    return CheckpointError(
        f"checkpoint '{path}' is truncated or corrupt (not a whole torch checkpoint file); "
        f"use another one (e.g. checkpoints/last.ckpt) or start fresh"
    )


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with every failure as one CheckpointError line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist (or is not a file)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        what = _refused_global(exc)
        raise CheckpointError(
            f"checkpoint '{path}' was not loaded: it holds a Python object "
            f"{f'({what}) ' if what else ''}outside the weights-only allow-list (tensors, numbers, "
            f"strings, lists, dicts), and unpickling it could run code; use checkpoints written by cifar_lab"
        ) from None
    except PermissionError as exc:  # an OSError, but not a sign of a cut file
        raise CheckpointError(f"cannot read checkpoint '{path}' ({exc.strerror}): check its permissions") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile):
        raise _corrupt(path) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"checkpoint '{path}' is not a Lightning training checkpoint (no state_dict)")
    bad = [k for k, v in checkpoint["state_dict"].items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint '{path}' has a state_dict entry that is not a tensor: {bad[0]!r}")
    return _absolute_paths(checkpoint, path.resolve().parent)


# ---- <run>/ paths ------------------------------------------------------------------------------


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """``value`` with ``fn`` applied to every string in it (dict keys too); other leaves as is."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return type(value)((fn(k) if isinstance(k, str) else k, _map_strings(v, fn)) for k, v in value.items())
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    if isinstance(value, tuple):
        return tuple(_map_strings(v, fn) for v in value)
    return value


def portable_paths(value: Any, run_dir: Path) -> Any:
    """``value`` with every path inside ``run_dir`` written as ``<run>/...`` (dict keys too): what
    checkpoints and the loggers' hparams store, so neither names a user's folder."""
    prefix = str(run_dir) + os.sep

    def rel(text: str) -> str:
        if text == str(run_dir):
            return RUN_MARKER
        return RUN_MARKER + "/" + text[len(prefix) :].replace(os.sep, "/") if text.startswith(prefix) else text

    return _map_strings(value, rel)


def _relative_paths(checkpoint: dict[str, Any], run_dir: Path, target: Path) -> dict[str, Any]:
    out = {k: (v if k == "state_dict" else portable_paths(v, run_dir)) for k, v in checkpoint.items()}
    out[_RUN_DIR_KEY] = os.path.relpath(run_dir, target.parent)
    return out


def _absolute_paths(checkpoint: dict[str, Any], ckpt_dir: Path) -> dict[str, Any]:
    rel_run = checkpoint.pop(_RUN_DIR_KEY, None)
    if not isinstance(rel_run, str):
        return checkpoint
    run_dir = os.path.normpath(os.path.join(ckpt_dir, rel_run))

    def absolute(text: str) -> str:
        if text == RUN_MARKER:
            return run_dir
        if text.startswith(RUN_MARKER + "/"):
            return os.path.join(run_dir, *text[len(RUN_MARKER) + 1 :].split("/"))
        return text

    return {k: (v if k == "state_dict" else _map_strings(v, absolute)) for k, v in checkpoint.items()}


# ---- Lightning plugin --------------------------------------------------------------------------


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint reader/writer for cifar_lab runs (pass as ``Trainer(plugins=[...])``).

    ``run_dir``: the run's output folder, whose absolute path is kept out of the files.
    ``clock``: the training clock; writes are taken out of it and counted as "checkpoint".
    """

    def __init__(
        self,
        run_dir: str | os.PathLike | None = None,
        clock: DeviceClock | None = None,
    ) -> None:
        self.run_dir = Path(run_dir).resolve() if run_dir is not None else None
        self.clock = clock
        self._preloaded: tuple[Path, dict[str, Any]] | None = None

    def preload(self, path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
        """Hand over a checkpoint already read (and checked) so the next load of it is free."""
        self._preloaded = (Path(path).resolve(), checkpoint)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO does not take storage_options")
        target = Path(path).resolve()
        if self.run_dir is not None:
            checkpoint = _relative_paths(checkpoint, self.run_dir, target)
        with self.clock.excluding("checkpoint") if self.clock is not None else nullcontext():
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            atomic_write_bytes(target, buffer.getvalue())

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        # weights_only is forced on whatever the caller asks: a checkpoint never runs code here
        resolved = Path(path).resolve()
        if self._preloaded is not None and self._preloaded[0] == resolved:
            checkpoint, self._preloaded = self._preloaded[1], None
            return checkpoint
        return load_checkpoint(
            path, map_location="cpu" if map_location is None or callable(map_location) else map_location
        )
