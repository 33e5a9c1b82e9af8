"""Any timm architecture, trained from scratch: ``model=timm model.name=NAME`` (the ``[timm]`` extra).

timm is imported only here and only when this factory runs, so the other models never need it.
Extra constructor arguments pass straight through to ``timm.create_model`` (``+model.drop_rate=0.1``,
``+model.img_size=32`` for a ViT); timm rejects the ones an architecture does not take. Which
architectures suit 32x32 images, measured:
docs/benchmarks.md#timm-architectures-at-32x32.
"""

from __future__ import annotations

import difflib
from typing import Any

from torch import nn

from cifar_lab.errors import ConfigError, one_line
from cifar_lab.models._checks import check_num_classes

EXTRA_MISSING = "model=timm needs the timm extra: pip install 'cifar_lab[timm]'"
# how many close matches an unknown name's error line offers
_SUGGESTIONS = 5


def timm_model(num_classes: int, *, name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)``.

    timm drops a ``None`` argument (``+model.drop_rate=null`` means timm's default), and refuses
    one the architecture does not take (a ConfigError line here).

    ``pretrained`` exists only to be refused: this template trains from scratch, and a run
    must not depend on downloading weights (the training machines may have no network)."""
    if pretrained is not False:
        typed = str(pretrained).lower() if isinstance(pretrained, bool) else repr(pretrained)
        raise ConfigError(
            f"model.pretrained={typed} is not supported: cifar_lab trains from scratch and downloads "
            "no weights; drop model.pretrained"
        )
    k = check_num_classes(num_classes, "timm")
    try:
        import timm
    except ImportError:
        raise ConfigError(EXTRA_MISSING) from None
    if not isinstance(name, str) or not timm.is_model(name):
        raise ConfigError(f"model.name={name!r} is not a timm architecture{_close_matches(timm, name)}")
    try:
        return timm.create_model(name, pretrained=False, num_classes=k, **kwargs)
    except (TypeError, ValueError, AssertionError) as err:  # an argument this architecture does not take
        passed = ", ".join(f"model.{key}={value!r}" for key, value in kwargs.items()) or "no extra arguments"
        raise ConfigError(f"timm's {name} cannot be built with {passed}: {one_line(err, limit=200)}") from None


def _close_matches(timm: Any, name: object) -> str:
    """'; close matches: a, b, c' from timm's registry (names containing it first, then similar spellings)."""
    if not isinstance(name, str) or not name:
        return ": give an architecture name, e.g. model.name=resnet18 (timm.list_models() lists them)"
    names = timm.list_models()
    containing = timm.list_models(f"*{name}*")
    similar = difflib.get_close_matches(name, names, n=_SUGGESTIONS, cutoff=0.6)
    matches = list(dict.fromkeys(similar + containing))[:_SUGGESTIONS]
    if not matches:
        return f" (none of timm's {len(names)} names is close; timm.list_models('*part*') searches them)"
    return f"; close matches: {', '.join(matches)}"
