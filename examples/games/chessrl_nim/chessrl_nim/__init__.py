"""Nim as a chessrl game plugin: the tutorial example of docs/envs.md.

Rules (normal play): heaps of objects; a move takes 1 or more objects from one heap; whoever
takes the last object wins. The position is a win for the side to move exactly when the
XOR of the heap sizes (the nim-sum) is non-zero, so the reward engine is exact and free.

Everything chessrl needs is in this file: an options dataclass, a :class:`Game` subclass,
a factory, and the ``chessrl_register_games`` hook that registers them. The entry point in
``pyproject.toml`` (group ``chessrl``) is how chessrl finds this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from operator import xor
from typing import Any, NamedTuple, Sequence

import numpy as np

import chessrl
from chessrl.game import Game, Observation
from chessrl.schema import opt


@dataclass
class NimOptions:
    """``[env]`` options of ``name = "nim"``: validated by chessrl like every other section."""

    heaps: list[int] = opt([3, 4, 5], "Start heap sizes, 1 to 6 heaps of 1 to 9 objects each.")
    start: str = opt(
        "fixed",
        "Training starts: 'fixed' = the heaps above; 'random' = each heap drawn uniformly "
        "from 1 to its size above. Evaluation always starts from the heaps above.",
        choices=("fixed", "random"),
    )
    max_plies: int = opt(30, "Truncate a trajectory after this many plies.", ge=1)

    def __post_init__(self) -> None:
        # A ValueError here becomes a one-line UserError naming the [env] section.
        if not 1 <= len(self.heaps) <= 6 or not all(1 <= h <= 9 for h in self.heaps):
            raise ValueError(f"heaps = {self.heaps} must be 1 to 6 heaps of 1 to 9 objects")


class NimState(NamedTuple):
    """Heap sizes and the side to move (0 = first player). Immutable, so copies are free."""

    heaps: tuple[int, ...]
    to_play: int


class Nim(Game):
    """Nim with an exact reward engine (the nim-sum) and a perfect engine opponent."""

    name = "nim"

    def __init__(self, options: NimOptions, seed: int = 0):
        self.options = options
        self.max_plies = options.max_plies
        self.size = max(options.heaps)  # the most objects one move can take
        self.n_actions = len(options.heaps) * self.size  # action = heap * size + (taken - 1)
        self.obs_len = len(options.heaps)  # one token per heap: its size
        self.obs_vocab = self.size + 1
        self.rng = np.random.default_rng(seed)  # our own generator, never the global one

    def initial_states(self, n: int, rng: np.random.Generator) -> list[NimState]:
        """Training starts: the configured heaps, or (start = 'random') smaller heaps drawn with
        ``rng``."""
        if self.options.start == "fixed":
            return self.eval_states(n, rng)
        return [
            NimState(tuple(int(rng.integers(1, h + 1)) for h in self.options.heaps), 0)
            for _ in range(n)
        ]

    def eval_states(self, n: int, rng: np.random.Generator) -> list[NimState]:
        """Evaluation starts: always the configured heaps, so every evaluation plays the same
        known position (a win for the first player when the nim-sum is non-zero)."""
        return [NimState(tuple(self.options.heaps), 0)] * n

    def copy_state(self, state: NimState) -> NimState:
        return state  # immutable

    def _mask(self, heaps: tuple[int, ...]) -> np.ndarray:
        taken = np.arange(1, self.size + 1)
        return (taken[None, :] <= np.array(heaps)[:, None]).reshape(-1)

    def observe(self, states: Sequence[NimState]) -> Observation:
        done = np.array([sum(s.heaps) == 0 for s in states], dtype=bool)
        return Observation(
            tokens=np.array([s.heaps for s in states], dtype=np.int64).reshape(
                len(states), self.obs_len
            ),
            action_mask=np.array([self._mask(s.heaps) for s in states], dtype=bool).reshape(
                len(states), -1
            ),
            to_play=np.array([s.to_play for s in states], dtype=np.int64),
            terminated=done,
            reason=["win" if d else "" for d in done],  # the player who took the last object won
        )

    def play(self, states: Sequence[NimState], actions: np.ndarray) -> list[NimState]:
        out = []
        for s, a in zip(states, np.asarray(actions).reshape(-1)):
            heap, take = divmod(int(a), self.size)
            take += 1
            if not 0 <= heap < len(s.heaps) or take > s.heaps[heap]:
                raise ValueError(
                    f"illegal nim action {self.action_to_str(int(a))} in {self.state_to_str(s)}"
                )
            heaps = list(s.heaps)
            heaps[heap] -= take
            out.append(NimState(tuple(heaps), 1 - s.to_play))
        return out

    def values(self, states: Sequence[NimState]) -> np.ndarray:
        """+1 if the nim-sum is non-zero (the side to move wins), else -1; exact, also when over."""
        return np.array([1.0 if reduce(xor, s.heaps) else -1.0 for s in states], dtype=np.float32)

    def engine_actions(self, states: Sequence[NimState]) -> np.ndarray:
        """Perfect play: move to nim-sum 0 when possible, else take one object from the largest
        heap."""
        out = np.zeros(len(states), dtype=np.int64)
        for i, s in enumerate(states):
            total = reduce(xor, s.heaps)
            for h, size in enumerate(s.heaps):
                if total and size ^ total < size:
                    out[i] = h * self.size + (size - (size ^ total)) - 1
                    break
            else:
                if sum(s.heaps):
                    out[i] = int(np.argmax(s.heaps)) * self.size
        return out

    def reseed(self, seed: int) -> None:
        """The trainer re-seeds before each step and evaluation, so a resumed run replays
        exactly."""
        self.rng = np.random.default_rng(seed)

    def eval_opponents(self) -> dict[str, Any]:
        def random(states: Sequence[NimState]) -> np.ndarray:
            masks = self.observe(states).action_mask
            return np.array(
                [self.rng.choice(np.flatnonzero(m)) if m.any() else 0 for m in masks],
                dtype=np.int64,
            )

        return {"perfect": self.engine_actions, "random": random}

    def action_to_str(self, action: int) -> str:
        heap, take = divmod(int(action), self.size)
        return f"take {take + 1} from heap {heap}"

    def state_to_str(self, state: NimState) -> str:
        return f"heaps {list(state.heaps)}, player {state.to_play} to move"

    def state_from_options(self, options: dict[str, Any]) -> NimState:
        """The Gym view's ``reset(options={"heaps": [1, 2, 3], "to_play": 0})``; a ValueError
        names what is wrong (the core adds the game and the request, then calls check_state)."""
        unknown = set(options) - {"heaps", "to_play"}
        if unknown or "heaps" not in options:
            raise ValueError(
                f"nim reset options are 'heaps' (required) and 'to_play', got {sorted(options)}"
            )
        return NimState(tuple(int(h) for h in options["heaps"]), int(options.get("to_play", 0)))

    def check_state(self, state: NimState) -> None:
        """Refuse what this game's encoding cannot show: another number of heaps, a heap larger
        than the largest configured one, a player other than 0 or 1; then the default check
        (a finished position, here all heaps empty, cannot start a game)."""
        if len(state.heaps) != len(self.options.heaps):
            raise ValueError(
                f"{len(state.heaps)} heaps, but this game has {len(self.options.heaps)} (env.heaps)"
            )
        if not all(0 <= h <= self.size for h in state.heaps):
            raise ValueError(
                f"heaps {list(state.heaps)}: each heap holds 0 to {self.size} objects here"
            )
        if state.to_play not in (0, 1):
            raise ValueError(f"to_play = {state.to_play}: 0 (first player) or 1")
        super().check_state(state)


def make_game(options: NimOptions, seed: int = 0) -> Nim:
    return Nim(options, seed)


@chessrl.hookimpl
def chessrl_register_games(register) -> None:
    register("nim", make_game, NimOptions)


def make_gym_env(render_mode: str | None = None, seed: int = 0, **options: Any):
    """Gymnasium entry point of ``chessrl/Nim-v0``: the core builds the Gym view of the
    registered game, validating ``options`` against NimOptions (a bad key is one UserError line)."""
    from chessrl.gym_env import make_gym_env as core_make_gym_env

    return core_make_gym_env("nim", render_mode=render_mode, seed=seed, **options)
