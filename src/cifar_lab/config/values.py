"""Reading a composed config's values, and the one error a bad value raises (ConfigError).

Every rule of ``cifar_lab.config`` reads through :func:`get` (a missing or unresolvable key is
one line too) and refuses through :func:`require`. A key a config does not set is :data:`ABSENT`:
the code that receives the value applies its own default, so no check writes a default again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from cifar_lab.errors import ConfigError

_MISSING = object()
ABSENT = object()  # a key the config does not set (the checked code's default applies)


def get(cfg: DictConfig, key: str, default: Any = _MISSING) -> Any:
    """``cfg``'s value at the dotted ``key``; without ``default``, a key that is not there is an error."""
    try:
        value = OmegaConf.select(cfg, key, default=default, throw_on_missing=True)
    except MissingMandatoryValue:
        raise ConfigError(f"{key} is required but not set: add {key}=... to the command line") from None
    except InterpolationResolutionError as err:
        raise ConfigError(f"{key} cannot be resolved: {err}".splitlines()[0]) from None
    if value is _MISSING:
        raise ConfigError(f"{key} is missing from the config")
    return value


def present(cfg: DictConfig, prefix: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """The values of ``prefix.<key>`` that the config sets (absent keys left out: their defaults apply)."""
    values = {key: get(cfg, f"{prefix}.{key}", ABSENT) for key in keys}
    return {key: value for key, value in values.items() if value is not ABSENT}


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def require(ok: bool, message: str) -> None:
    """The one way a rule refuses a value: a ConfigError line naming the key, the value and a fix."""
    if not ok:
        raise ConfigError(message)


def plain(value: Any) -> Any:
    """An OmegaConf node as the plain list/dict a user typed, for the error line."""
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


# a value's rule: the test it must pass, and what the error line says after "<key>=<value> "
Rule = tuple[Callable[[Any], bool], str]


def one_of(allowed: tuple[Any, ...]) -> Rule:
    """The rule of a value that must be one of ``allowed``."""
    return (lambda value: value in allowed, f"is not one of: {', '.join(map(str, allowed))}")


def check_given(options: Mapping[str, Any], group: str, rules: Mapping[str, Rule]) -> None:
    """Each of ``rules``' keys that ``options`` gives, in the rules' order, refused in one line
    ``<group>.<key>=<value> <why>`` unless it passes; a key not given is not checked (its owner's
    default applies), and keys without a rule are not this group's to check."""
    for key, (ok, why) in rules.items():
        if key in options:
            value = options[key]
            require(ok(value), f"{group}.{key}={value!r} {why}")
