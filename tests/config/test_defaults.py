"""Each default is written once: where conf/ sets a value that the code receiving it also
defaults, the two are equal, so a hand-built object and `python train.py` train alike; and
no check in cifar_lab.config writes a default of its own (it reads only the keys a config sets)."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"
CONFIG_PACKAGE = REPO_ROOT / "src" / "cifar_lab" / "config"
# groups whose files are complete recipes or Hydra's own settings: their values are choices
_CHOICES = ("experiment", "hydra", "hparams_search", "debug")


def _target(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _defaults(obj: Any) -> dict[str, Any]:
    """The keyword defaults of a class's constructor or a function (tuples as lists, as YAML has them)."""
    params = inspect.signature(obj).parameters.values()
    return {
        p.name: list(p.default) if isinstance(p.default, tuple) else p.default
        for p in params
        if p.default is not inspect.Parameter.empty
    }


def _our_targets(node: Any, where: str) -> list[tuple[str, DictConfig]]:
    found = []
    if OmegaConf.is_dict(node):
        if str(node.get("_target_", "")).startswith("cifar_lab."):
            found.append((where, node))
        for key in node:
            child = node._get_node(key)
            if OmegaConf.is_dict(child):
                found += _our_targets(child, f"{where}.{key}")
    return found


def _set_values(node: DictConfig) -> dict[str, Any]:
    """The plain values a YAML node sets (interpolations are references to another key, not defaults)."""
    values = {}
    for key in node:
        if str(key).startswith("_") or OmegaConf.is_interpolation(node, key):
            continue
        value = node[key]
        values[key] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return values


def _group_files() -> list[Path]:
    return [p for p in sorted(CONF_DIR.rglob("*.yaml")) if not set(p.relative_to(CONF_DIR).parts) & set(_CHOICES)]


def _mismatches(values: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    return [
        f"{key}: YAML {value!r}, code {defaults[key]!r}"
        for key, value in values.items()
        if key in defaults and value != defaults[key]
    ]


@pytest.mark.parametrize("path", _group_files(), ids=lambda p: str(p.relative_to(CONF_DIR)))
def test_a_group_file_and_its_target_default_alike(path: Path) -> None:
    for where, node in _our_targets(OmegaConf.load(path), path.name):
        wrong = _mismatches(_set_values(node), _defaults(_target(node._target_)))
        assert not wrong, f"{where} ({node._target_}) writes another default than its code: {wrong}"


def test_the_module_settings_default_as_their_owners_do() -> None:
    """conf/train.yaml's module.*: ImageClassifier's arguments and the tricks' callbacks."""
    from cifar_lab.recipes.whitening import WhiteningInit
    from cifar_lab.training.module import ImageClassifier

    module = _set_values(OmegaConf.load(CONF_DIR / "train.yaml").module)
    assert not _mismatches(module, _defaults(ImageClassifier))
    assert module["whitening_eps"] == _defaults(WhiteningInit)["eps"]


def test_the_compared_files_cover_each_group_default() -> None:
    """The test above compares something: the default choice of each group has a cifar_lab target."""
    compared = {
        path.relative_to(CONF_DIR).as_posix() for path in _group_files() if _our_targets(OmegaConf.load(path), "")
    }
    assert {
        "data/cifar10.yaml",
        "data/source/torchvision.yaml",
        "model/fast.yaml",
        "scheduler/warmup_linear.yaml",
    } <= compared


def test_no_check_writes_a_default() -> None:
    """``get(cfg, key, <a literal>)`` in cifar_lab.config would be a default written a second
    time: absent keys read as ABSENT (or None, "not set"), and the code receiving them decides."""
    allowed = {"None", "ABSENT", "_MISSING", "False"}
    written = []
    for path in CONFIG_PACKAGE.glob("*.py"):
        for call in ast.walk(ast.parse(path.read_text())):
            if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "get" and len(call.args) == 3:
                default = ast.unparse(call.args[2])
                if default not in allowed:
                    written.append(f"{path.name}:{call.lineno} get(..., {ast.unparse(call.args[1])}, {default})")
    assert not written, "defaults written in a check: " + "; ".join(written)


def test_the_augmentation_keys_are_augment_specs_fields_and_the_datamodules_arguments() -> None:
    """data.* augmentation keys: the rule's list (config.data.AUGMENT_OPTIONS), AugmentSpec's
    fields and CIFARDataModule's arguments name the same options, with the same defaults in the
    datamodule as in conf/data/cifar10.yaml (test above); a new option missed in one fails here."""
    import dataclasses

    from cifar_lab.config.data import AUGMENT_OPTIONS
    from cifar_lab.data.datamodule import CIFARDataModule
    from cifar_lab.data.loader import AugmentSpec

    fields = {f.name for f in dataclasses.fields(AugmentSpec) if f.init}
    assert fields == {*AUGMENT_OPTIONS, "crop", "crop_epochs"}
    assert fields <= set(inspect.signature(CIFARDataModule).parameters)
