"""Errors the CLI turns into one line and an exit code instead of a traceback."""

import abc
from pathlib import Path


class UserError(Exception):
    """A mistake in the user's input (config, CLI argument, file).

    The CLI prints ``str(error)`` as one line and exits with code 2.
    The message says what is wrong, where (file, key, line) and how to fix it.
    """


class PluginError(Exception):
    """An exception raised inside a plugin's hook, re-raised with the plugin's name."""

    def __init__(self, plugin: str, hook: str, error: BaseException):
        self.plugin, self.hook, self.error = plugin, hook, error
        super().__init__(
            f"plugin '{plugin}' failed in hook {hook}: {type(error).__name__}: {error}"
        )


class InvalidState(UserError, ValueError):
    """A start state a user asked for cannot start a game (a finished position, a malformed
    board, unknown reset options): one line naming the game, the request and what is wrong.
    A ``ValueError`` too, as Gymnasium users expect of a bad ``reset(options=...)``."""


class RunFailure(Exception):
    """A run cannot go on for a reason outside the code: it diverged, the disk is full or
    read-only, an engine failed for good. The trainer writes the line to ``train.log``; the
    CLI prints it as one line and exits with code 1. The message says how to continue."""


class EngineFailure(RuntimeError, metaclass=abc.ABCMeta):
    """An engine a game relies on failed for good (past the game's own restarts and retries).

    A game raises it, a subclass of it, or a class it registers with
    ``EngineFailure.register(cls)``; the trainer turns it into a :class:`RunFailure`. Match it
    with ``isinstance`` (an ``except EngineFailure`` clause does not see registered classes).
    """


class NonFinite(ArithmeticError):
    """A number the run cannot use is NaN or infinite (logits before sampling, parameters
    after an optimiser step). The trainer skips the step and counts it."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal after its checkpoint; the CLI exits with ``exit_code``
    (130 for SIGINT, 143 for SIGTERM). The trainer sets ``run_dir`` and ``step`` (the last
    checkpoint's) so that the CLI can print the command that resumes the run."""

    def __init__(self, exit_code: int = 130):
        super().__init__(exit_code)
        self.exit_code = exit_code
        self.run_dir: Path | None = None
        self.step: int | None = None


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the machine running out of memory: Python's MemoryError, torch's
    ``OutOfMemoryError`` (CUDA) or its CPU allocator's "can't allocate memory"."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of ``exc``'s message (its type's name for an empty one), shortened to
    ``limit`` characters with "..." if given: what a one-line error quotes of an exception."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first if limit is None or len(first) <= limit else first[: limit - 3] + "..."
