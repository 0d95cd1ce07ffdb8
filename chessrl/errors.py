"""Errors the CLI turns into one line and an exit code instead of a traceback."""


class UserError(Exception):
    """A mistake in the user's input (config, CLI argument, file).

    The CLI prints ``str(error)`` as one line and exits with code 2.
    The message says what is wrong, where (file, key, line) and how to fix it.
    """


class PluginError(Exception):
    """An exception raised inside a plugin's hook, re-raised with the plugin's name."""

    def __init__(self, plugin: str, hook: str, error: BaseException):
        self.plugin, self.hook, self.error = plugin, hook, error
        super().__init__(f"plugin '{plugin}' failed in hook {hook}: {type(error).__name__}: {error}")
