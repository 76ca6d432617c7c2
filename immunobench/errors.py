"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input: an unknown name, a malformed card or plugin file, missing weights.

    The message is one line that names what is wrong and how to fix it.
    """


class UnknownNameError(UserError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CardError(UserError):
    """A task card that does not validate: the message names the file and the field."""


class PluginError(UserError):
    """A plugin file or entry point that cannot be imported, or a name claimed twice."""


class BackboneError(UserError):
    """A model that cannot be loaded as it is: missing offline, pickled, or inconsistent."""


def describe_failure(exc: BaseException) -> dict:
    """A failed stage's reason (one line; out-of-memory named as such) and traceback, while handling ``exc``."""
    import traceback

    import torch

    reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
        reason = f"out of memory: {reason}"
    return {"reason": reason, "traceback": traceback.format_exc(limit=5)}


class ConfigError(UserError):
    """A plugin config value (``--set`` or a caller's override) that its field's type refuses."""
