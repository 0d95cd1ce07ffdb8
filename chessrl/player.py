"""A checkpoint as a player: its policy, the game it was trained on, and a name for records.

``chessrl eval``, ``chessrl play`` and the chess plugin's ``chessrl uci`` load checkpoints
here. A checkpoint is a file or a run directory (its latest ``step_*.pt``); it is read with
:func:`chessrl.checkpoint.load` (tensors and plain data only, never code). The game is
rebuilt from the checkpoint's ``[env]`` section through the game's plugin, the policy from
the sizes the checkpoint records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from chessrl import checkpoint as ckpt_io
from chessrl import pluginmanager
from chessrl.errors import UserError
from chessrl.game import Game
from chessrl.policy import Policy, log_probs, sample, set_precision
from chessrl.schema import Locator, build

resolve = ckpt_io.resolve  # a checkpoint file, or a run directory's latest step checkpoint


def game_name(state: dict[str, Any]) -> str:
    """The game a checkpoint's policy plays (checkpoints older than the ``game`` key are chess)."""
    return str(
        state.get("game") or ((state.get("config") or {}).get("env") or {}).get("name") or "chess"
    )


def label(path: Path, step: int | None = None) -> str:
    """How records name a checkpoint file: its run and step, e.g. ``clean-20260101-120000 step
    400`` (the step of a ``step_*.pt`` is its name's); ``RUN initial`` for a run's initial.pt; a
    file outside a run by its name (and ``step``, if any)."""
    found = ckpt_io.PATTERN.search(path.name)
    if path.parent.name == "checkpoints" and (found or path.name == "initial.pt"):
        run = path.parent.parent.resolve().name
        if path.name == "initial.pt" or found is None:  # found is None only for initial.pt
            return f"{run} initial"
        return f"{run} step {int(found.group(1))}"
    return f"{path.stem} step {step}" if step else path.stem


def build_game(
    state: dict[str, Any], seed: int = 0, overrides: dict[str, Any] | None = None
) -> Game:
    """The checkpoint's game with its ``[env]`` options and ``overrides``. The checkpoint's keys
    that the installed game no longer knows are dropped (a checkpoint outlives option renames);
    an unknown key in ``overrides`` is a :class:`UserError`."""
    name = game_name(state)
    games = pluginmanager.games()
    if name not in games:
        pluginmanager.check_not_broken(name)
        raise UserError(
            f"the checkpoint plays game '{name}', which is not installed (installed: "
            f"{', '.join(sorted(games)) or 'none'}){pluginmanager.missing_hint(name)}"
        )
    reg = games[name]
    known = set(getattr(reg.schema, "__dataclass_fields__", {}))
    env = {k: v for k, v in ((state.get("config") or {}).get("env") or {}).items() if k in known}
    env.update(overrides or {})  # the caller's keys are checked strictly
    where = Locator(
        "the checkpoint's [env] options",
        overrides={f"env.{k}": f"env.{k}={v!r}" for k, v in (overrides or {}).items()},
    )
    return reg.obj(build(reg.schema, env, prefix="env", loc=where), seed)


def build_policy(state: dict[str, Any], game: Game | type[Game], where: str) -> Policy:
    """The checkpoint's policy, on the CPU, in eval mode; its sizes must fit ``game`` (a game, or
    a Game class whose sizes are class attributes, as chess's are). ``where`` names the file."""
    if "policy" not in state:
        raise UserError(f"{where}: no policy weights in the checkpoint")
    sizes = dict(state.get("policy_sizes") or {})
    if not sizes:  # older checkpoints: the config's [policy] section and the game's sizes
        pol = (state.get("config") or {}).get("policy") or {}
        sizes = {
            k: pol[k] for k in ("d_model", "n_layers", "n_heads", "d_ff", "head_dim") if k in pol
        }
        sizes.update(obs_vocab=game.obs_vocab, obs_len=game.obs_len, n_actions=game.n_actions)
    fits = {"obs_vocab": game.obs_vocab, "obs_len": game.obs_len, "n_actions": game.n_actions}
    wrong = [f"{k} {sizes.get(k)} (game: {v})" for k, v in fits.items() if sizes.get(k) != v]
    if wrong:
        raise UserError(
            f"{where}: the policy does not fit game '{game.name}' "
            "with the checkpoint's [env] options: "
            f"{', '.join(wrong)}"
        )
    try:
        with torch.device("meta"):  # shapes only, no memory: sizes a file cannot back are refused
            shapes = {k: tuple(v.shape) for k, v in Policy(**sizes).state_dict().items()}
        weights = state["policy"]
        wrong_shape = [
            k
            for k, v in weights.items()
            if torch.is_tensor(v) and shapes.get(k, tuple(v.shape)) != tuple(v.shape)
        ]
        if wrong_shape:
            raise ValueError(
                f"{wrong_shape[0]} is {tuple(weights[wrong_shape[0]].shape)}, "
                f"the sizes make it {shapes[wrong_shape[0]]}"
            )
        with torch.random.fork_rng(
            devices=[]
        ):  # the init is overwritten; never advance the global RNG
            policy = Policy(**sizes)
        policy.load_state_dict(weights)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UserError(
            f"{where}: the weights do not fit the recorded policy sizes {sizes} "
            f"({str(exc).splitlines()[0]})"
        ) from None
    # the precision the run trained and evaluated with, where this machine has it
    pol = (state.get("config") or {}).get("policy") or {}
    set_precision(policy, bool(pol.get("bf16", True)), bool(pol.get("cpu_bf16", False)))
    return policy.float().eval()


@dataclass
class Player:
    """A loaded checkpoint: ``policy`` plays ``game``; ``name`` names it in records."""

    policy: Policy
    game: Game
    state: dict[str, Any]
    path: Path
    name: str

    def mover(
        self, *, greedy: bool = True, temperature: float = 1.0, seed: int = 0
    ) -> Callable[[Sequence[Any]], np.ndarray]:
        """``states -> int64 actions``: the policy's most likely legal action (``greedy``), or
        one sampled at ``temperature`` from a generator seeded with ``seed`` (its own, never
        the global one)."""
        gen = torch.Generator().manual_seed(seed)

        def choose(states: Sequence[Any]) -> np.ndarray:
            obs = self.game.observe(states)
            with torch.no_grad():
                lp = log_probs(
                    self.policy,
                    torch.as_tensor(obs.tokens),
                    torch.as_tensor(obs.action_mask),
                    temperature,
                )
            return (lp.argmax(-1) if greedy else sample(lp, gen)).numpy().astype(np.int64)

        return choose

    def close(self) -> None:
        self.game.close()


def load_player(path: str | Path, *, seed: int = 0, env: dict[str, Any] | None = None) -> Player:
    """The player of checkpoint ``path`` (a file or a run directory); ``env`` overrides the
    checkpoint's ``[env]`` options. Every mistake is one :class:`UserError` line."""
    resolved = resolve(path)
    return player_from_state(resolved, ckpt_io.load(resolved), seed=seed, env=env)


def player_from_state(
    path: Path, state: dict[str, Any], *, seed: int = 0, env: dict[str, Any] | None = None
) -> Player:
    """:func:`load_player` of a checkpoint already read from ``path``."""
    resolved = path
    game = build_game(state, seed, env)
    try:
        policy = build_policy(state, game, str(resolved))
    except UserError as exc:
        game.close()
        if env and "does not fit game" in str(exc):  # the caller's options changed the game
            sets = ", ".join(f"--set env.{k}={v!r}" for k, v in env.items())
            raise UserError(
                f"{exc} (changed by {sets}: drop it to play the checkpoint's own game)"
            ) from None
        raise
    except BaseException:
        game.close()
        raise
    return Player(policy, game, state, resolved, label(resolved, state.get("step")))
