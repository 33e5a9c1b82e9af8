"""Hydra's ``instantiate`` with the project's one-line errors: how every configured object (data,
net, callbacks, loggers, trainer) is built. Hydra is imported when something is built, not before."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from cifar_lab.errors import CifarLabError, ConfigError, one_line


def instantiate_at(key: str, node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` for the config at ``key`` (e.g. "data", "callbacks.lookahead").

    Hydra wraps a constructor's error in a multi-line InstantiationException. A CifarLabError
    in it (which names its key) is raised as it is; a value the constructor rejects
    (ValueError, TypeError, Lightning's MisconfigurationException) or a _target_ that cannot
    be imported becomes one ConfigError ``<key of the node built>: <the error's first line>``.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if OmegaConf.is_config(node):  # resolved in place, so Hydra's full_key is relative to ``key``
        node = OmegaConf.to_container(node, resolve=True)
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, CifarLabError):
            raise cause from None
        lines = str(exc).splitlines()
        inner = next((line[len("full_key: ") :] for line in lines if line.startswith("full_key: ")), "")
        where = f"{key}.{inner}" if inner else key
        if isinstance(cause, (ValueError, TypeError)) or type(cause).__name__ == "MisconfigurationException":
            message = one_line(cause, limit=None)  # a constructor's own words: its fix too
        elif isinstance(cause, ImportError) or lines[0].startswith("Error locating target"):
            message = lines[0].split(", set env var HYDRA_FULL_ERROR")[0]
        else:
            raise
        raise ConfigError(f"{where}: {message}") from None
