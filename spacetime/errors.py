"""Errors that the command-line tools print as one clear line."""


class SpacetimeError(Exception):
    """A user-facing error: its message names the bad value and what was expected."""


class CheckpointError(SpacetimeError):
    """A checkpoint is missing, corrupt, truncated, or does not fit the model."""


class ConfigError(SpacetimeError, ValueError):
    """A training config names an unknown key, or a value of the wrong type or out of range."""
