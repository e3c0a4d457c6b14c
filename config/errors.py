"""The one error type for bad settings and bad input data."""


class ConfigError(ValueError):
    """A setting or an input file is invalid.

    The message is one line that names the run-config key (or the file) and
    says how to fix it, e.g. ``"num-server-rounds=0: must be >= 1"``. It is
    raised at start-up, before any model is loaded or trained.
    """
