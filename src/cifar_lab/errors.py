"""User-facing errors: each one is printed as a single line, without a traceback."""


class CifarLabError(Exception):
    """Base class for errors caused by the user's input (config, data, checkpoint)."""


class ConfigError(CifarLabError, ValueError):
    """The composed Hydra config is invalid."""


class DataError(CifarLabError, ValueError):
    """The data source is missing, unreadable or malformed."""


class CheckpointError(CifarLabError):
    """A checkpoint is missing, unreadable, unsafe, or does not fit the run."""


class NonFiniteLossError(CifarLabError):
    """The training loss became NaN or infinite: the run is stopped, no checkpoint of it kept."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step
