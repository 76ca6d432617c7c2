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


class ConfigError(UserError):
    """A plugin config value (``--set`` or a caller's override) that its field's type refuses."""
