"""The hooks chessrl plugins implement.

Discovery hooks run once per process on every installed plugin module (entry-point group
``chessrl``). Run hooks run on the regulariser instances an experiment enables, each
registered under its own name with the run's plugin manager so that pluggy calls them in the
order of the ``[plugins.*]`` sections in the TOML (:class:`chessrl.regularisers.Regularisers`).
A :class:`chessrl.regularisers.Regulariser` implements every run hook by calling one of its
typed methods (named beside each hook). Every hook is documented with an example in
``docs/plugins.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import pluggy

if TYPE_CHECKING:
    import argparse

    from tensordict import TensorDict

    from chessrl.regularisers import Coefficients, LossTerm, PluginReport, RunView

hookspec = pluggy.HookspecMarker("chessrl")
hookimpl = pluggy.HookimplMarker("chessrl")


# --- discovery hooks -----------------------------------------------------------------


@hookspec
def chessrl_register_games(register: Callable[..., None]) -> None:
    """Register games: call ``register(name, factory, options_schema)`` once per game."""


@hookspec
def chessrl_register_regularisers(register: Callable[..., None]) -> None:
    """Register regulariser classes: call ``register(name, cls)``; ``cls.Config`` is its
    option schema."""


@hookspec
def chessrl_register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add sub-commands to the ``chessrl`` CLI (an ``argparse`` sub-parsers object)."""


@hookspec
def chessrl_register_evaluators(register: Callable[..., None]) -> None:
    """Give a game its own ``chessrl eval``: call ``register(game, run, add_arguments)``."""


# --- run hooks (called on enabled regulariser instances) -------------------------------


@hookspec
def chessrl_loss_terms(
    out: TensorDict, batch: TensorDict, coefs: Coefficients
) -> LossTerm | list[LossTerm] | None:
    """Return a ``LossTerm``, a list of them, or None, computed from the loss module's output
    ``out`` once per PPO epoch (``Regulariser.loss_terms``)."""


@hookspec
def chessrl_adjust_coefficients(
    metrics: Mapping[str, float], coefs: Coefficients, step: int
) -> None:
    """Adjust named coefficients in ``coefs`` from this step's ``metrics``; return None
    (``Regulariser.adjust_coefficients``)."""


@hookspec
def chessrl_train_start(run: RunView) -> None:
    """Called once before the first step (also after a resume) with the run's view
    (``Regulariser.train_start``)."""


@hookspec
def chessrl_step_end(metrics: Mapping[str, float], step: int) -> PluginReport | None:
    """Return a ``PluginReport`` (metrics and whether the plugin acted) for this step
    (``Regulariser.report``)."""


@hookspec
def chessrl_eval_end(metrics: Mapping[str, float], step: int) -> None:
    """Called after an evaluation with its ``eval/...`` metrics (``Regulariser.eval_end``)."""


@hookspec
def chessrl_train_end(run: RunView) -> None:
    """Called once when training stops, normally or not (``Regulariser.train_end``)."""


@hookspec
def chessrl_state_dict() -> dict[str, Any]:  # type: ignore[empty-body]  # a spec: no body
    """Return ``{plugin_name: state}`` to store in checkpoints (``Regulariser.state_dict``)."""


@hookspec
def chessrl_load_state_dict(states: Mapping[str, Any]) -> None:
    """Restore this plugin's state from ``states[plugin_name]`` (a checkpoint's dict;
    ``Regulariser.load_state_dict``)."""
