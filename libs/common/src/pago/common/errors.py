"""Configuration errors that stop a process with one clear line instead of a traceback."""


class ConfigError(Exception):
    """A setting or config file that is missing or wrong; the message names it."""
