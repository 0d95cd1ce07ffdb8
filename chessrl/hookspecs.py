"""The hooks chessrl plugins implement.

Discovery hooks run once per process on every installed plugin module (entry-point
group ``chessrl``). Run hooks run on the regulariser instances an experiment enables,
each registered under its own name, in the order of ``[plugins.*]`` sections in the TOML.
Every hook is documented with an example in ``docs/plugins.md``.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("chessrl")
hookimpl = pluggy.HookimplMarker("chessrl")


# --- discovery hooks -----------------------------------------------------------------

@hookspec
def chessrl_register_games(register):
    """Register games: call ``register(name, factory, options_schema)`` once per game."""


@hookspec
def chessrl_register_regularisers(register):
    """Register regulariser classes: call ``register(name, cls)``; ``cls.Config`` is its option schema."""


@hookspec
def chessrl_register_commands(subparsers):
    """Add sub-commands to the ``chessrl`` CLI (an ``argparse`` sub-parsers object)."""


@hookspec
def chessrl_register_evaluators(register):
    """Give a game its own ``chessrl eval``: call ``register(game, run, add_arguments)``."""


# --- run hooks (called on enabled regulariser instances) -------------------------------

@hookspec
def chessrl_loss_terms(out, batch, coefs):
    """Return a list of ``LossTerm`` computed from the loss module's output ``out``."""


@hookspec
def chessrl_adjust_coefficients(metrics, coefs, step):
    """Adjust named coefficients in ``coefs`` from this step's ``metrics``; return None."""


@hookspec
def chessrl_train_start(run):
    """Called once before the first step (also after a resume)."""


@hookspec
def chessrl_step_end(metrics, step):
    """Return a ``PluginReport`` (metrics and whether the plugin acted) for this step."""


@hookspec
def chessrl_eval_end(metrics, step):
    """Called after an evaluation with its ``eval/...`` metrics."""


@hookspec
def chessrl_train_end(run):
    """Called once when training stops, normally or not."""


@hookspec
def chessrl_state_dict():
    """Return ``{plugin_name: state}`` to store in checkpoints."""


@hookspec
def chessrl_load_state_dict(states):
    """Restore this plugin's state from ``states[plugin_name]`` (a checkpoint's dict)."""
