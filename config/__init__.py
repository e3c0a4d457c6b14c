"""Run configuration: the typed settings of a run and the error for bad ones."""

from config.errors import ConfigError
from config.run_config import RunConfig

__all__ = ["ConfigError", "RunConfig"]
