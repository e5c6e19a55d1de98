"""Errors that the command-line tools print as one clear line."""


class SpacetimeError(Exception):
    """A user-facing error: its message names the bad value and what was expected."""


class CheckpointError(SpacetimeError):
    """A checkpoint is missing, corrupt, truncated, or does not fit the model."""


class ConfigError(SpacetimeError, ValueError):
    """A training config names an unknown key, or a value of the wrong type or out of range."""


class ArgumentValueError(SpacetimeError, ValueError):
    """An argument of the right type but out of range, or at odds with another argument."""


class ArgumentTypeError(SpacetimeError, TypeError):
    """An argument of the wrong type (a string for a number, a number for a prompt)."""
