"""Games where a player may move twice in a row (extra turns, passes): every move is scored for
the player who made it, in the TorchRL env, its final values, the Gym view and matches.

The game here is Nim with an extra turn: a move that empties a heap (but not the last one)
gives the mover another turn; whoever takes the last object wins and is the ``to_play`` of the
finished position (a game that ends on an extra turn). Its reward engine is exact (negamax over
the small heaps), so every expected value is known.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple, Sequence

import numpy as np
import torch

from chessrl.env import BoardGameEnv
from chessrl.game import Game, Observation
from chessrl.gym_env import GymView


class State(NamedTuple):
    heaps: tuple[int, ...]
    to_play: int


SIZE = 3


def children(s: State) -> list[tuple[int, State]]:
    out = []
    for h, n in enumerate(s.heaps):
        for take in range(1, n + 1):
            heaps = list(s.heaps)
            heaps[h] -= take
            again = heaps[h] == 0  # emptied a heap: move again (and keep the turn at the end)
            out.append(
                (h * SIZE + take - 1, State(tuple(heaps), s.to_play if again else 1 - s.to_play))
            )
    return out


@lru_cache(maxsize=None)
def exact(s: State) -> float:
    """The value for ``s.to_play``: a finished position names its winner as to_play."""
    if sum(s.heaps) == 0:
        return 1.0
    return max(exact(c) if c.to_play == s.to_play else -exact(c) for _, c in children(s))


class ExtraTurnNim(Game):
    name = "extra_turn_nim"

    def __init__(self, heaps=(2, 3, 3), max_plies: int = 20):
        self.heaps = tuple(heaps)
        self.n_actions = len(heaps) * SIZE
        self.obs_len = len(heaps) + 1
        self.obs_vocab = SIZE + 1
        self.max_plies = max_plies

    def initial_states(self, n: int, rng: np.random.Generator) -> list[State]:
        return [State(self.heaps, 0)] * n

    def eval_states(self, n: int, rng: np.random.Generator) -> list[State]:
        return self.initial_states(n, rng)

    def copy_state(self, state: State) -> State:
        return state

    def observe(self, states: Sequence[State]) -> Observation:
        masks = np.zeros((len(states), self.n_actions), dtype=bool)
        for i, s in enumerate(states):
            for a, _ in children(s):
                masks[i, a] = True
        done = np.array([sum(s.heaps) == 0 for s in states])
        return Observation(
            tokens=np.array([[*s.heaps, s.to_play] for s in states], dtype=np.int64),
            action_mask=masks,
            to_play=np.array([s.to_play for s in states], dtype=np.int64),
            terminated=done,
            reason=["win" if d else "" for d in done],
        )

    def play(self, states: Sequence[State], actions: np.ndarray) -> list[State]:
        return [dict(children(s))[int(a)] for s, a in zip(states, np.asarray(actions))]

    def values(self, states: Sequence[State]) -> np.ndarray:
        return np.array([exact(s) for s in states], dtype=np.float32)

    def action_to_str(self, action: int) -> str:
        return f"take {action % SIZE + 1} from heap {action // SIZE}"

    def state_to_str(self, state: State) -> str:
        return f"{list(state.heaps)} player {state.to_play}"


def for_mover(after: State, mover: int) -> float:
    return exact(after) if after.to_play == mover else -exact(after)


def test_every_ply_is_scored_for_its_mover_through_extra_turns_and_the_end():
    game = ExtraTurnNim()
    env = BoardGameEnv(game, batch_size=(8,), seed=0)
    td = env.reset()
    rng = np.random.default_rng(0)
    extra = ended = 0
    while not td["done"].all():
        states_before = env.game_states()
        mask = td["action_mask"].numpy()
        actions = np.array([rng.choice(np.flatnonzero(m)) for m in mask])
        td["action"] = torch.as_tensor(actions)
        nxt = env.step(td)["next"]
        for i, before in enumerate(states_before):
            if td["done"][i]:
                continue
            after = env.game_states([i])[0]
            mover = before.to_play
            want = for_mover(after, mover)
            assert nxt["value"][i, 0].item() == want, (before, after)
            assert nxt["reward"][i, 0].item() == want - exact(before)
            extra += after.to_play == mover and sum(after.heaps) > 0
            if nxt["terminated"][i]:
                ended += 1
                assert nxt["value"][i, 0].item() == 1.0  # the last taker won
        td = nxt
    assert extra > 0 and ended == 8  # both cases were exercised


def test_final_values_are_for_the_player_who_moved_last():
    game = ExtraTurnNim(heaps=(3, 3, 3), max_plies=2)
    env = BoardGameEnv(game, batch_size=(16,), seed=0)
    env.score_plies = False
    td = env.reset()
    rng = np.random.default_rng(1)
    movers = np.full(16, -1)
    for _ in range(2):
        movers = np.where(td["done"].reshape(-1).numpy(), movers, td["to_play"].numpy())
        mask = td["action_mask"].numpy()
        td["action"] = torch.as_tensor([rng.choice(np.flatnonzero(m)) for m in mask])
        td = env.step(td)["next"]
    rows, values = env.final_values()
    assert rows.size > 0
    states = env.game_states()
    again = 0
    for r, v in zip(rows, values):
        assert v == for_mover(states[r], movers[r])
        again += states[r].to_play == movers[r]
    assert again > 0  # some trajectories ended on an extra turn


def test_the_gym_view_rewards_the_mover_on_an_extra_turn():
    env = GymView(ExtraTurnNim(heaps=(1, 3, 3)))
    env.reset(seed=0)
    start = env.state
    _, reward, terminated, _, info = env.step(0)  # empty heap 0: an extra turn
    assert info["to_play"] == 0 and not terminated
    assert reward == for_mover(env.state, 0) - exact(start)
    # to the end: the last move's reward brings the mover's value to +1
    while True:
        before = env.state
        action = next(a for a, _ in children(before))
        _, reward, terminated, truncated, info = env.step(action)
        assert reward == for_mover(env.state, before.to_play) - exact(before)
        if terminated or truncated:
            break
    assert terminated and env.value == 1.0
