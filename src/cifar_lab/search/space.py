"""The search space: Hydra's sweep syntax as Optuna distributions.

Hydra's own override parser reads ``interval(...)``, ``tag(log, interval(...))``,
``choice(...)``, ``a,b,c`` and ``range(...)``, so ``hydra.sweeper.params`` and the command
line accept what ``python train.py -m`` accepts; only the mapping to Optuna is ours.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cifar_lab.errors import ConfigError
from cifar_lab.overrides import parse_override
from cifar_lab.search import SearchConfigError, require_optuna

SYNTAX = "interval(LOW, HIGH), tag(log, interval(LOW, HIGH)), choice(A, B, ...) or range(START, STOP, STEP)"
KNOWN_TAGS = {"log", "int"}
PRIMITIVES = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Dimension:
    """One searched key: its Optuna distribution and how a sampled value is written back as
    an override (a choice of lists is searched as the lists' override text)."""

    key_element: str  # the override's key as typed, '+'/'++' included
    name: str  # the Optuna parameter name: the config key
    distribution: Any
    choice_text: tuple[tuple[Any, str], ...] = ()

    def override(self, value: Any) -> str:
        for choice, text in self.choice_text:
            if type(choice) is type(value) and choice == value:
                return f"{self.key_element}={text}"
        if isinstance(value, float):
            return f"{self.key_element}={value!r}"
        return f"{self.key_element}={value}"


@dataclass(frozen=True)
class SearchSpace:
    """The overrides every job gets, and the searched dimensions by parameter name."""

    fixed: tuple[str, ...]
    dimensions: dict[str, Dimension]

    def distributions(self) -> dict[str, Any]:
        return {name: dim.distribution for name, dim in self.dimensions.items()}

    def job_overrides(self, params: Mapping[str, Any]) -> list[str]:
        return list(self.fixed) + [self.dimensions[name].override(params[name]) for name in self.dimensions]


def _parse(line: str, where: str) -> Any:
    try:
        return parse_override(line)
    except ConfigError as err:
        raise SearchConfigError(f"{where}: {err}; write {SYNTAX}") from None


def _distribution(override: Any, where: str) -> tuple[Any, tuple[tuple[Any, str], ...]]:
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    optuna = require_optuna()
    dists = optuna.distributions
    sweep = override.value()
    tags = set(sweep.tags)
    unknown = tags - KNOWN_TAGS
    if unknown:
        raise SearchConfigError(
            f"{where}: unknown tag {sorted(unknown)[0]!r}; the tags are log and int: "
            f"write e.g. tag(log, interval(0.001, 0.1)) or tag(int, interval(1, 8))"
        )
    log, integer = "log" in tags, "int" in tags
    try:
        if isinstance(sweep, IntervalSweep):
            low, high = sweep.start, sweep.end
            if not low < high:
                raise ValueError(f"the interval is empty: {low} is not below {high}")
            if integer:
                return dists.IntDistribution(math.ceil(low), math.floor(high), log=log), ()
            return dists.FloatDistribution(float(low), float(high), log=log), ()
        if log:
            raise ValueError("only interval(...) takes the log tag")
        if isinstance(sweep, RangeSweep):
            start, stop, step = sweep.start, sweep.stop, sweep.step
            count = math.ceil((stop - start) / step) if step else 0
            if count < 1:
                raise ValueError(f"range({start}, {stop}, {step}) holds no value")
            last = start + (count - 1) * step
            last = round(last, 12) if isinstance(last, float) else last  # 0.1 + 0.2 is 0.30000000000000004
            if all(isinstance(v, int) for v in (start, stop, step)) and step > 0:
                return dists.IntDistribution(start, last, step=step), ()
            if step > 0:
                return dists.FloatDistribution(float(start), float(last), step=float(step)), ()
            raise ValueError("a range's step must be positive")
        if isinstance(sweep, ChoiceSweep):
            texts = list(override.sweep_string_iterator())
            if not texts:
                raise ValueError("choice() needs at least one value")
            values = list(sweep.list)
            choices = values if all(isinstance(v, PRIMITIVES) for v in values) else texts
            return dists.CategoricalDistribution(choices), tuple(zip(choices, texts))
    except ValueError as err:
        raise SearchConfigError(f"{where}: {err}; write {SYNTAX}") from None
    raise SearchConfigError(f"{where}: not a search dimension; write {SYNTAX}")


def _dimension(override: Any, where: str) -> Dimension:
    distribution, choice_text = _distribution(override, where)
    return Dimension(override.get_key_element(), override.key_or_group, distribution, choice_text)


def parse_space(params: Mapping[str, Any] | None, arguments: Sequence[str]) -> SearchSpace:
    """The search of ``hydra.sweeper.params`` and the command line's ``arguments``.

    A sweep on the command line replaces the config's dimension of that key; a plain
    ``key=value`` there fixes the key (it is no longer searched); every other argument is
    passed to each job as typed."""
    dimensions: dict[str, Dimension] = {}
    fixed: list[str] = []
    for key, value in (params or {}).items():
        where = f"hydra.sweeper.params.{key}"
        override = _parse(f"{key}={value}", where)
        if override.is_sweep_override():
            dimensions[override.key_or_group] = _dimension(override, where)
        else:
            fixed.append(f"{override.get_key_element()}={value}")
    from_config = set(dimensions)
    for line in arguments:
        override = _parse(line, "the command line")
        name = override.key_or_group
        if name in from_config:
            dimensions.pop(name, None)
            fixed = [f for f in fixed if _parse(f, "").key_or_group != name]
        if override.is_sweep_override():
            dimensions[name] = _dimension(override, f"the command line's {line!r}")
        else:
            fixed.append(line)
    if not dimensions:
        raise SearchConfigError(
            "nothing to search: give hydra.sweeper.params (conf/hparams_search/optuna.yaml) "
            "or a sweep on the command line, e.g. 'optimizer.lr=tag(log, interval(0.01, 1))'"
        )
    return SearchSpace(tuple(fixed), dimensions)
