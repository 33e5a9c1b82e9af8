"""Constructor-argument checks shared by the model zoo.

Every check raises a one-line ConfigError naming the Hydra field (``model.<name>``), the bad
value and the fix, so a typo on the command line fails at construction, not mid-training.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

from cifar_lab.errors import ConfigError


def check_num_classes(value: object, model: str) -> int:
    """num_classes comes from the data, so the message points there rather than at model.*."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"num_classes={value!r} is invalid for {model}: it must be a positive integer "
            "(the trainer passes the dataset's class count; check the data source's classes)"
        )
    return value


def check_int(value: object, name: str, model: str, minimum: int = 1) -> int:
    """An integer hyperparameter >= minimum (bools are rejected: True is not a width)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"model.{name}={value!r} is invalid for {model}: it must be an integer >= {minimum}")
    return value


def check_float(
    value: object,
    name: str,
    model: str,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A real hyperparameter inside [low, high] (ends made open on request)."""
    ok = isinstance(value, Real) and not isinstance(value, bool)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lb, rb = ("(" if low_open else "["), (")" if high_open else "]")
        raise ConfigError(
            f"model.{name}={value!r} is invalid for {model}: it must be a number in {lb}{low}, {high}{rb}"
        )
    return float(value)  # type: ignore[arg-type]


def check_bool(value: object, name: str, model: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"model.{name}={value!r} is invalid for {model}: it must be true or false")
    return value


def check_int_list(value: object, name: str, model: str, length: int) -> list[int]:
    """A fixed-length list of positive ints; accepts an OmegaConf ListConfig (a Sequence)."""
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if (
        items is None
        or len(items) != length
        or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in items)
    ):
        raise ConfigError(
            f"model.{name}={value!r} is invalid for {model}: it must be a list of {length} "
            f"positive integers, e.g. model.{name}=[64,256,256]"
        )
    return items
