"""chessrl's envs as TorchRL and Gymnasium users drive them
(docs/envs.md#torchrl-and-gymnasium-interop).

Real TorchRL collectors (the 0.14 ``Collector``), real ``GymWrapper``, real Gymnasium
``check_env``, real games (chess with real Stockfish): every transition is checked.
"""

from __future__ import annotations

import importlib.metadata
import warnings

import gymnasium
import numpy as np
import pytest
import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs import ActionMask, Compose, DTypeCastTransform, GymWrapper, TransformedEnv
from torchrl.envs.utils import check_env_specs
from torchrl.modules import MaskedCategorical, ProbabilisticActor

import chessrl  # noqa: F401  (registers the Gymnasium ids)
from chessrl import pluginmanager
from chessrl.env import BoardGameEnv
from chessrl.errors import InvalidState, UserError
from chessrl.schema import build

GAMES = {  # [env] options that keep each game quick; chess uses real Stockfish at depth 1
    "tictactoe": {"start": "random", "random_plies": 2},
    "chess": {"start": "random", "random_plies": 4, "depth": 1, "engines": 1, "max_plies": 6},
}
GYM_IDS = {"tictactoe": "chessrl/TicTacToe-v0", "chess": "chessrl/Chess-v0"}


def make_game(name: str, **options):
    reg = pluginmanager.games()[name]
    return reg.obj(build(reg.schema, {**GAMES[name], **options}, prefix="env"), 0)


class Uniform(nn.Module):
    """Equal logits over the vocabulary: with the mask, a uniformly random legal move."""

    def __init__(self, n_actions: int):
        super().__init__()
        self.n = n_actions
        self.bias = nn.Parameter(torch.zeros(n_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(*obs.shape[:-1], self.n)


def masked_actor(n_actions: int, obs_key: str) -> ProbabilisticActor:
    net = TensorDictModule(Uniform(n_actions), in_keys=[obs_key], out_keys=["logits"])
    return ProbabilisticActor(
        net,
        in_keys={"logits": "logits", "mask": "action_mask"},
        distribution_class=MaskedCategorical,
        return_log_prob=True,
    )


def tictactoe_after(tokens: np.ndarray, action: int) -> np.ndarray:
    """Tic-tac-toe's rule on tokens (1 = the mover's mark, 2 = the opponent's): the mover marks
    ``action``, then the view turns to the other side."""
    nxt = np.where(tokens == 1, 2, np.where(tokens == 2, 1, 0))
    nxt[action] = 2
    return nxt


def check_transitions(batch, obs_key: str, game: str, max_plies: int | None) -> int:
    """Every transition of a collector batch ``[..., T]``: a legal action, no board jump (the
    next row starts where this one ended, or from a fresh reset after ``done``), ``done`` =
    ``terminated | truncated``, and with a ``ply`` key: +1 per step, 0 after a reset, truncation
    exactly at ``max_plies``. Returns the number of resets seen."""
    T = batch.shape[-1]
    flat = batch.reshape(-1, T)
    resets = 0
    for b in range(flat.shape[0]):
        row = flat[b]
        mask = row["action_mask"].bool()
        action = row["action"]
        assert mask.gather(-1, action.unsqueeze(-1)).all(), f"illegal action on board {b}"
        nxt = row["next"]
        done, term, trunc = nxt["done"][:, 0], nxt["terminated"][:, 0], nxt["truncated"][:, 0]
        assert torch.equal(done, term | trunc)
        assert not row["done"].any(), "a transition started from a finished board"
        for t in range(T):
            if game == "tictactoe" and not done[t]:
                want = tictactoe_after(row[obs_key][t].numpy(), int(action[t]))
                assert np.array_equal(nxt[obs_key][t].numpy(), want), (
                    f"board {b} t {t}: not the move played"
                )
            if "ply" in row.keys():
                assert int(nxt["ply"][t]) == int(row["ply"][t]) + 1
                if trunc[t]:
                    assert int(nxt["ply"][t]) == max_plies
            if t + 1 < T:
                if done[t]:
                    resets += 1
                    if "ply" in row.keys():
                        assert int(row["ply"][t + 1]) == 0, (
                            f"board {b} t {t + 1}: a reset that is not a new game"
                        )
                else:
                    assert torch.equal(row[obs_key][t + 1], nxt[obs_key][t]), (
                        f"board {b} jumped at t {t + 1}"
                    )
                    if "ply" in row.keys():
                        assert int(row["ply"][t + 1]) == int(nxt["ply"][t])
    return resets


@pytest.mark.parametrize("game_name", ["tictactoe", "chess"])
@pytest.mark.parametrize("with_policy", [True, False], ids=["masked_actor", "no_policy"])
def test_collector_over_board_game_env(game_name, with_policy):
    game = make_game(game_name)
    try:
        env = BoardGameEnv(game, batch_size=(2, 3), seed=1)
        check_env_specs(env)
        policy = masked_actor(game.n_actions, "observation") if with_policy else None
        collector = Collector(env, policy, frames_per_batch=6 * 12, total_frames=6 * 24)
        resets = 0
        for batch in collector:
            assert batch.shape == (2, 3, 12)
            resets += check_transitions(batch, "observation", game_name, game.max_plies)
        collector.shutdown()
        assert resets > 0  # boards finished and were reset, one by one, while the others went on
    finally:
        game.close()


@pytest.mark.parametrize("game_name", ["tictactoe", "chess"])
def test_collector_over_the_gymwrapper_recipe(game_name):
    gym_env = gymnasium.make(GYM_IDS[game_name], **GAMES[game_name])
    env = TransformedEnv(
        GymWrapper(gym_env, categorical_action_encoding=True),
        Compose(DTypeCastTransform(torch.int8, torch.bool, in_keys=["action_mask"]), ActionMask()),
    )
    try:
        check_env_specs(env)
        env.rand_action(env.reset())  # the spec's mask is the position's legal moves
        collector = Collector(
            env,
            masked_actor(gym_env.unwrapped.game.n_actions, "board"),
            frames_per_batch=30,
            total_frames=60,
        )
        resets = sum(check_transitions(batch, "board", game_name, None) for batch in collector)
        collector.shutdown()
        assert resets > 0
    finally:
        env.close()


def test_partial_reset_resets_only_the_masked_boards_and_their_groups_share_a_root():
    game = make_game("tictactoe", start="empty")
    env = BoardGameEnv(game, batch_size=(2, 3), seed=0)
    td = env.reset()
    for _ in range(2):
        td["action"] = env.rand_action(td)["action"]
        td = env.step(td)["next"]
    before = td.clone()
    reset = torch.zeros(2, 3, 1, dtype=torch.bool)
    reset[0, 1] = reset[0, 2] = reset[1, 0] = True
    out = env.reset(td.set("_reset", reset))
    keep = ~reset[..., 0]
    assert torch.equal(out["observation"][keep], before["observation"][keep])
    assert torch.equal(out["ply"][keep], before["ply"][keep]) and (out["ply"][~keep] == 0).all()
    assert (out["observation"][~keep] == 0).all()  # the empty board: a new game
    assert env.states[1] == env.states[2]  # one group, reset together: copies of one root
    # the env's own boards agree with the TensorDict TorchRL merged: the next step continues them
    td = env.rand_action(out)
    nxt = env.step(td)["next"]
    assert torch.equal(nxt["ply"], out["ply"] + 1)


def test_rand_action_and_clones_of_the_action_spec_follow_the_position():
    game = make_game("chess", reward="none")
    env = BoardGameEnv(game, batch_size=(4,), seed=3)
    clone = env.full_action_spec.clone()  # what a collector's RandomPolicy samples from
    td = env.reset()
    for _ in range(10):
        td = env.rand_action(td)
        assert td["action_mask"].gather(-1, td["action"].unsqueeze(-1)).all()
        a = clone.rand()["action"]
        assert td["action_mask"].gather(-1, a.unsqueeze(-1)).all()
        td = env.step(td)["next"]


def start_modes(reg) -> list[dict]:
    """Every value of a game's ``start`` option (if it has one) as [env] options."""
    from chessrl.schema import describe

    rows = {r["key"]: r for r in describe(reg.schema)}
    return [{"start": s} for s in rows["start"].get("choices", ())] if "start" in rows else [{}]


def registered_gym_ids() -> list[tuple[str, str]]:
    """``(env id, game)`` for every ``chessrl.gymnasium`` entry point installed."""
    out = []
    for ep in importlib.metadata.entry_points(group="chessrl.gymnasium"):
        module = ep.value.split(":")[0]
        game = next(
            n
            for n, r in pluginmanager.games().items()
            if pluginmanager.get_plugin_manager().get_plugin(r.plugin).__name__ == module
        )
        out.append((f"chessrl/{ep.name}", game))
    return out


FAST = {
    "chess": {"depth": 1, "engines": 1, "selfplay_depth": 1},
    "connect_four": {"solver_depth": 1, "opponent_depth": 1},
}


def test_gymnasium_check_env_passes_for_every_registered_game_and_start_mode(tmp_path):
    from gymnasium.utils.env_checker import check_env

    fen = tmp_path / "starts.fen"
    fen.write_text("8/8/8/4k3/8/8/4K3/4R3 w - - 0 1\n4k3/8/8/8/8/8/4P3/4K3 b - - 0 1\n")
    checked = []
    for env_id, game in registered_gym_ids():
        for options in start_modes(pluginmanager.games()[game]):
            if options.get("start") == "file":
                options["start_file"] = str(fen)
            env = gymnasium.make(env_id, **FAST.get(game, {}), **options)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a checker warning is a failure too
                check_env(env.unwrapped, skip_render_check=True)
            env.close()
            checked.append((game, options.get("start")))
    assert {"chess", "tictactoe", "connect_four"} <= {g for g, _ in checked}
    assert ("chess", "selfplay") in checked and ("tictactoe", "random") in checked


def test_gym_view_samples_legal_moves_and_an_illegal_action_loses_or_raises():
    env = gymnasium.make("chessrl/TicTacToe-v0", start="random").unwrapped
    obs, _ = env.reset(seed=0)
    for _ in range(20):
        assert obs["action_mask"][env.action_space.sample()] == 1
    illegal = int(np.flatnonzero(obs["action_mask"] == 0)[0])
    obs, reward, terminated, truncated, info = env.step(illegal)
    assert terminated and info["reason"] == "illegal_action" and reward <= -1 + 1e-6
    assert obs["action_mask"].tolist() == [1] + [0] * 8  # over: only action 0, as in BoardGameEnv
    with pytest.raises(ValueError, match="call reset"):
        env.step(0)
    strict = gymnasium.make("chessrl/TicTacToe-v0", illegal_action="raise").unwrapped
    strict.reset(seed=0, options={"moves": [4]})
    with pytest.raises(ValueError, match=r"illegal action 4 \(r1c1\)"):
        strict.step(4)
    for outside in (-1, 9):  # never wrapped around to a legal action, never an IndexError
        with pytest.raises(ValueError, match=rf"illegal action {outside} \(not in 0..8\)"):
            strict.step(outside)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(-1)
    assert terminated and info["reason"] == "illegal_action" and reward <= -1 + 1e-6
    with pytest.raises(UserError, match="illegal_action = 'x'"):
        gymnasium.make("chessrl/TicTacToe-v0", illegal_action="x")


@pytest.mark.parametrize(
    "env_id, options, message",
    [
        (
            "chessrl/TicTacToe-v0",
            {"board": "XXX|OO.|..."},
            r"tictactoe: reset\(options=.*already finished \(win\)",
        ),
        (
            "chessrl/TicTacToe-v0",
            {"moves": [0], "board": "X........"},
            "exactly one of 'board' or 'moves'",
        ),
        ("chessrl/ConnectFour-v0", {"columns": "33"}, "take only 'moves'"),
        (
            "chessrl/Chess-v0",
            {"fen": "7k/6Q1/6K1/8/8/8/8/8 b - - 0 1"},
            "already over in this position",
        ),
        ("chessrl/Chess-v0", {"fen": "not a fen"}, "invalid FEN"),
    ],
)
def test_a_bad_reset_request_is_one_line_naming_the_game(env_id, options, message):
    env = gymnasium.make(env_id, reward="none") if "Chess" in env_id else gymnasium.make(env_id)
    with pytest.raises(InvalidState, match=message) as info:
        env.reset(options=options)
    assert "\n" not in str(info.value) and isinstance(info.value, ValueError)
    env.close()
