"""The TorchRL env that every game gets from its :class:`Game` (its Gymnasium view is
:mod:`chessrl.gym_env`; ``chessrl.env.make_gym_env`` and ``GymView`` still resolve there).

``BoardGameEnv`` has batch dims ``(R, G)`` (or any shape): a reset draws ``R`` root
positions and copies each one ``G`` times along the last dim, so a rollout stacked over
plies is exactly the ``[R, G, T]`` TensorDict the trainer consumes. Finished boards are
absorbing: later actions on them are ignored and they report ``done`` with reward 0.

Keys (see docs/rollouts.md): ``observation`` int64 [*B, L], ``action_mask`` bool [*B, A]
(a finished board shows only action 0, so masked samplers stay well defined), ``to_play``
int64 [*B], ``ply`` int64 [*B], ``action`` int64 [*B], ``reward`` / ``value`` float [*B, 1]
(for the player who just moved), ``done`` / ``terminated`` / ``truncated`` bool [*B, 1].

TorchRL interop (docs/envs.md#torchrl-collectors-and-random-actions): a partial reset (a
``"_reset"`` mask, what collectors send when some boards are done) resets exactly the masked
boards; the action spec is a :class:`LegalActions` whose mask is the current legal moves, so
``env.rand_action()`` and a collector without a policy play legal moves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from chessrl.game import Game, Observation


class LegalActions(Categorical):
    """The action spec of :class:`BoardGameEnv`: a ``Categorical`` whose mask is always the
    env's current legal moves.

    TorchRL's ``RandomPolicy`` (a collector's policy when none is given) samples from a
    *clone* of the env's action spec, made once; a plain ``Categorical`` clone would keep the
    mask of the first position forever. Here every clone shares one mask tensor, which the env
    updates in place after every reset and step, so any copy samples legal moves.
    """

    def update_mask(self, mask) -> None:
        current = getattr(self, "mask", None)  # unset while __init__ runs
        if (
            mask is not None
            and current is not None
            and torch.as_tensor(mask).shape == current.shape
        ):
            self.mask.copy_(torch.as_tensor(mask, dtype=torch.bool, device=self.mask.device))
        else:
            super().update_mask(mask)

    def clone(self) -> "LegalActions":
        return self.__class__(
            n=self.space.n, shape=self.shape, device=self.device, dtype=self.dtype, mask=self.mask
        )  # shared on purpose: the live legal-move mask


class BoardGameEnv(EnvBase):
    """A batched, absorbing TorchRL env over ``game``; see the module docstring for keys."""

    batch_locked = True

    def __init__(
        self, game: Game, batch_size=(1,), device: str | torch.device = "cpu", seed: int = 0
    ):
        if not isinstance(game, Game):
            raise TypeError(
                f"{type(game).__qualname__} is not a chessrl.game.Game: a game subclasses Game "
                "(docs/envs.md), which gives every optional member its default"
            )
        batch_size = torch.Size(batch_size)
        super().__init__(device=device, batch_size=batch_size)
        self.game = game
        self.n = int(math.prod(batch_size))
        self.group = batch_size[-1] if len(batch_size) > 1 else 1
        self.rng = np.random.default_rng(seed)
        self.states: list[Any] = []
        self.reasons: list[str] = [""] * self.n
        # False: plies are not scored by the reward engine (reward/value 0) except where a game
        # ends by its rules; :meth:`final_values` scores the last positions. For returns that
        # need the final position only ("terminal"): one search per trajectory, not per ply.
        self.score_plies = True
        B = batch_size
        self.observation_spec = Composite(
            observation=Bounded(
                0, game.obs_vocab - 1, shape=(*B, game.obs_len), dtype=torch.int64, device=device
            ),
            action_mask=Categorical(2, shape=(*B, game.n_actions), dtype=torch.bool, device=device),
            to_play=Bounded(0, 1, shape=B, dtype=torch.int64, device=device),
            ply=Unbounded(shape=B, dtype=torch.int64, device=device),
            value=Unbounded(shape=(*B, 1), dtype=torch.float32, device=device),
            shape=B,
            device=device,
        )
        self.action_spec = LegalActions(
            game.n_actions,
            shape=B,
            dtype=torch.int64,
            device=device,
            mask=torch.ones(*B, game.n_actions, dtype=torch.bool, device=device),
        )
        self.reward_spec = Unbounded(shape=(*B, 1), dtype=torch.float32, device=device)
        self.done_spec = Composite(
            {
                k: Categorical(2, shape=(*B, 1), dtype=torch.bool, device=device)
                for k in ("done", "terminated", "truncated")
            },
            shape=B,
            device=device,
        )

    # --- helpers ---------------------------------------------------------------------
    def _tensor(self, a: np.ndarray, dtype) -> torch.Tensor:
        # copy: ply/terminated/truncated are updated in place every step, and a shared buffer
        # would rewrite every TensorDict already returned
        return (
            torch.tensor(np.asarray(a), dtype=dtype)
            .reshape(*self.batch_size, *a.shape[1:])
            .to(self.device)
        )

    def _observe(
        self, done: np.ndarray, obs: Observation | None = None
    ) -> tuple[dict, Observation]:
        obs = obs if obs is not None else self.game.observe(self.states)
        mask = obs.action_mask.copy()
        dead = done | obs.terminated | ~mask.any(axis=1)
        mask[dead] = False
        mask[dead, 0] = True
        self._mask = mask
        self._tokens, self._to_play = np.asarray(obs.tokens), np.asarray(obs.to_play)
        return self._fields(), obs

    def _fields(self) -> dict:
        """The observation entries of every board, from the last observation; updates the
        action spec's live mask."""
        self.action_spec.update_mask(self._tensor(self._mask, torch.bool))
        return {
            "observation": self._tensor(self._tokens, torch.int64),
            "action_mask": self._tensor(self._mask, torch.bool),
            "to_play": self._tensor(self._to_play, torch.int64),
            "ply": self._tensor(self.ply, torch.int64),
        }

    def _flags(self, terminated: np.ndarray, truncated: np.ndarray) -> dict:
        b = lambda a: self._tensor(a[:, None], torch.bool)  # noqa: E731
        return {
            "terminated": b(terminated),
            "truncated": b(truncated),
            "done": b(terminated | truncated),
        }

    # --- EnvBase ---------------------------------------------------------------------
    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask = tensordict.get("_reset", None) if tensordict is not None else None
        if mask is not None and self.states:
            rows = mask.reshape(self.n, -1).any(-1).cpu().numpy()
            if not rows.all():
                return self._partial_reset(np.flatnonzero(rows))
        roots = self.game.initial_states(self.n // self.group, self.rng)
        # group members share a root: observe and score each root once, then copy it
        root_obs = self.game.observe(roots)
        states = [self.game.copy_state(r) for r in roots for _ in range(self.group)]
        root_values = np.repeat(np.asarray(self.game.values(roots), dtype=np.float32), self.group)
        g = self.group
        obs = Observation(
            tokens=np.repeat(root_obs.tokens, g, axis=0),
            action_mask=np.repeat(root_obs.action_mask, g, axis=0),
            to_play=np.repeat(root_obs.to_play, g),
            terminated=np.repeat(root_obs.terminated, g),
            reason=[r for r in root_obs.reason for _ in range(g)],
        )
        return self.load_states(states, root_values, observation=obs)

    def _partial_reset(self, rows: np.ndarray) -> TensorDictBase:
        """Reset the flat boards ``rows`` only (TorchRL's ``"_reset"`` mask); the others keep
        their game, ply and flags. The rows of one group reset in the same call start from
        copies of one new root; a group whose members reset at different times holds
        different games (the trainer always resets every board at once)."""
        groups, member_of = np.unique(rows // self.group, return_inverse=True)
        roots = self.game.initial_states(len(groups), self.rng)
        obs = self.game.observe(roots)
        values = np.asarray(self.game.values(roots), dtype=np.float32)
        for k, i in enumerate(rows):
            r = member_of[k]
            self.states[i] = self.game.copy_state(roots[r])
            self.ply[i], self.truncated[i] = 0, False
            self.terminated[i], self.reasons[i] = bool(obs.terminated[r]), obs.reason[r]
            self.values[i] = self._value[i] = values[r]
            dead = obs.terminated[r] or not obs.action_mask[r].any()
            self._mask[i] = obs.action_mask[r] if not dead else np.arange(self.game.n_actions) == 0
            self._tokens[i], self._to_play[i] = obs.tokens[r], obs.to_play[r]
            self._last_mover[i] = obs.to_play[r]
        fields = self._fields()
        fields["value"] = self._tensor(self._value[:, None], torch.float32)
        fields.update(self._flags(self.terminated, self.truncated))
        return TensorDict(fields, batch_size=self.batch_size, device=self.device)

    def load_states(
        self,
        states: list[Any],
        values: np.ndarray | None = None,
        observation: Observation | None = None,
    ) -> TensorDictBase:
        """Start every board from ``states`` (flat, one per board); return the reset TensorDict.
        ``observation``: the game's observation of exactly these states, if already made."""
        if len(states) != self.n:
            raise ValueError(f"expected {self.n} states, got {len(states)}")
        self.states = list(states)
        self.ply = np.zeros(self.n, dtype=np.int64)
        self.terminated = np.zeros(self.n, dtype=bool)
        self.truncated = np.zeros(self.n, dtype=bool)
        fields, obs = self._observe(np.zeros(self.n, dtype=bool), observation)
        self._last_mover = self._to_play.copy()  # who moved last: nobody yet
        self.terminated |= obs.terminated
        self.reasons = list(obs.reason)
        if values is None:
            values = self.game.values(self.states)
        self.values = np.asarray(values, dtype=np.float32).copy()
        self._value = self.values.copy()  # the "value" entry each board last reported
        fields["value"] = self._tensor(self.values[:, None], torch.float32)
        fields.update(self._flags(self.terminated, self.truncated))
        return TensorDict(fields, batch_size=self.batch_size, device=self.device)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        actions = tensordict.get("action").reshape(-1).cpu().numpy()
        active = ~(self.terminated | self.truncated)
        idx = np.flatnonzero(active)
        if idx.size and not self._mask[idx, actions[idx]].all():
            bad = idx[~self._mask[idx, actions[idx]]][0]
            raise ValueError(
                f"illegal action {actions[bad]} ({self.game.action_to_str(int(actions[bad]))}) "
                f"on board {bad}: {self.game.state_to_str(self.states[bad])}"
            )
        reward = np.zeros(self.n, dtype=np.float32)
        value = np.zeros(self.n, dtype=np.float32)
        mover = self._to_play.copy()
        if idx.size:
            moved = self.game.play([self.states[i] for i in idx], actions[idx])
            for i, s in zip(idx, moved):
                self.states[i] = s
            self.ply[idx] += 1
        fields, obs = self._observe(~active)
        if idx.size:
            if self.score_plies:
                after = np.asarray(
                    self.game.values([self.states[i] for i in idx]), dtype=np.float32
                )
            else:  # only results by the rules; live boards are scored once, by final_values()
                after = np.zeros(idx.size, dtype=np.float32)
                ended = np.flatnonzero(obs.terminated[idx])
                if ended.size:
                    after[ended] = self.game.values([self.states[i] for i in idx[ended]])
            # values are for the side to move now: the opponent, or the mover again where the
            # game gave it another turn (Kalah's extra turns, a pass in Othello)
            again = obs.to_play[idx] == mover[idx]
            mover_value = np.where(again, after, -after).astype(np.float32)
            self._last_mover[idx] = mover[idx]
            reward[idx] = mover_value - self.values[idx]
            value[idx] = mover_value
            self.values[idx] = after
            newly_done = obs.terminated[idx]
            self.terminated[idx] |= newly_done
            for i in idx[newly_done]:
                self.reasons[i] = obs.reason[i]
            trunc = ~self.terminated[idx] & (self.ply[idx] >= self.game.max_plies)
            self.truncated[idx[trunc]] = True
            for i in idx[trunc]:
                self.reasons[i] = "max_plies"
        self._value = value
        fields["reward"] = self._tensor(reward[:, None], torch.float32)
        fields["value"] = self._tensor(value[:, None], torch.float32)
        fields.update(self._flags(self.terminated, self.truncated))
        return TensorDict(fields, batch_size=self.batch_size, device=self.device)

    def final_values(self) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, values)``: the flat boards still live that moved since the reset (not ended by
        the rules), and the value of their current position for the player who moved last."""
        rows = np.flatnonzero(~self.terminated & (self.ply > 0))
        if rows.size == 0:
            return rows, np.zeros(0, dtype=np.float32)
        after = np.asarray(self.game.values([self.states[i] for i in rows]), dtype=np.float32)
        self.values[rows] = after
        again = self._to_play[rows] == self._last_mover[rows]
        return rows, np.where(again, after, -after).astype(np.float32)

    def game_states(self, rows: Sequence[int] | None = None) -> list[Any]:
        """The game states of the flat boards ``rows`` (every board by default), in that order.

        A game's state is the game's own object (a python-chess board, a bitboard), so it lives
        here, outside the TensorDict; this is the one public way to read it (callables that
        play from states, adjudication, PGN). The objects are the env's: do not modify them.
        """
        return list(self.states) if rows is None else [self.states[i] for i in rows]

    def end_reasons(self) -> list[str]:
        """Why each flat board's game ended: the game's reason ("checkmate", "win", ...),
        ``"max_plies"`` when truncated, ``""`` while it runs. Strings, so not in the
        TensorDict (its ``terminated`` / ``truncated`` entries carry the flags)."""
        return list(self.reasons)

    def _set_seed(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)

    def engine_actions(self, rows: np.ndarray) -> np.ndarray:
        """The game engine's action for the flat board indices ``rows``."""
        if rows.size == 0:
            return np.zeros(0, dtype=np.int64)
        return np.asarray(self.game.engine_actions([self.states[i] for i in rows]), dtype=np.int64)


def __getattr__(name: str) -> Any:
    # the Gymnasium view moved to chessrl.gym_env; its documented old path still resolves
    if name in ("make_gym_env", "GymView", "reset_state"):
        from chessrl import gym_env

        return getattr(gym_env, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
