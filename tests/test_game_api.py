"""The Game contract, checked on every installed game, and the third-party game tutorial.

Each game found through ``chessrl.pluginmanager.games()`` is built from its default options
and driven through random playouts; every observation, mask, value and engine move is checked
against the contract in ``chessrl/game.py``. Chess is skipped by default (it needs an
external engine and is slow); set ``CHESSRL_TEST_CHESS=1`` to include it.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import pip_install_copy
from torchrl.envs.utils import check_env_specs

from chessrl import pluginmanager
from chessrl.env import BoardGameEnv
from chessrl.game import Game

REPO = Path(__file__).resolve().parents[1]
SLOW_GAMES = set() if os.environ.get("CHESSRL_TEST_CHESS") else {"chess"}
GAMES = sorted(pluginmanager.games())


def make(name: str, seed: int = 0) -> Game:
    reg = pluginmanager.games()[name]
    return reg.obj(reg.schema(), seed)


def game_params():
    return [
        pytest.param(n, marks=pytest.mark.skip(reason="slow: set CHESSRL_TEST_CHESS=1"))
        if n in SLOW_GAMES
        else n
        for n in GAMES
    ]


def check_specs(env: BoardGameEnv) -> None:
    check_env_specs(env, seed=0)


def check_observation(game: Game, states: list, n: int):
    obs = game.observe(states)
    assert obs.tokens.shape == (n, game.obs_len) and obs.tokens.dtype == np.int64
    assert obs.tokens.min(initial=0) >= 0 and obs.tokens.max(initial=0) < game.obs_vocab
    assert obs.action_mask.shape == (n, game.n_actions) and obs.action_mask.dtype == bool
    assert obs.to_play.shape == (n,) and obs.to_play.dtype == np.int64
    assert set(obs.to_play) <= {0, 1}
    assert obs.terminated.shape == (n,) and obs.terminated.dtype == bool
    assert len(obs.reason) == n
    # A board has legal moves exactly while it is not over; a reason exactly when it is over.
    assert (obs.action_mask.any(axis=1) == ~obs.terminated).all()
    assert all(bool(r) == bool(t) for r, t in zip(obs.reason, obs.terminated))
    return obs


def test_builtin_games_are_registered():
    assert {"tictactoe", "connect_four"} <= set(GAMES)


def test_game_declares_its_optional_extras_with_defaults():
    """The extras the core uses are declared on Game, so it calls them without getattr."""
    from chessrl.game import Game

    game = Game()
    assert game.engine_seconds == 0.0 and game.stats() == {}
    assert game.benchmark(None, {}) == {} and game.eval_opponents() == {}
    assert game.action_structure() is None and game.reseed(0) is None
    with pytest.raises(ValueError, match="takes no reset options"):
        game.state_from_options({"fen": "x"})


@pytest.mark.parametrize("name", game_params())
def test_contract_random_playouts(name):
    game = make(name)
    assert game.n_actions > 0 and game.obs_len > 0 and game.obs_vocab > 1 and game.max_plies > 0
    rng = np.random.default_rng(0)
    n = 6
    states = game.initial_states(n, np.random.default_rng(1))
    again = game.initial_states(n, np.random.default_rng(1))
    assert [game.state_to_str(s) for s in states] == [game.state_to_str(s) for s in again], (
        "seeded starts differ"
    )
    seen_terminal = False
    for ply in range(min(game.max_plies, 60)):
        obs = check_observation(game, states, n)
        assert (game.observe(states).tokens == obs.tokens).all(), "observe is not pure"
        values = game.values(states)
        assert values.shape == (n,) and values.dtype == np.float32
        assert np.all((values >= -1) & (values <= 1))
        for i in np.flatnonzero(obs.terminated):
            seen_terminal = True
            # Terminal values are the exact result: 0 for a draw, +-1 otherwise.
            expected = {0.0} if "draw" in obs.reason[i] else {-1.0, 1.0}
            assert float(values[i]) in expected, (obs.reason[i], values[i])
        live = np.flatnonzero(~obs.terminated)
        if live.size == 0:
            break
        # Every masked action is playable and changes the position.
        i = int(live[0])
        for a in np.flatnonzero(obs.action_mask[i]):
            child = game.play([game.copy_state(states[i])], np.array([a]))[0]
            assert game.state_to_str(child) != game.state_to_str(states[i])
        # Playing on a copy leaves the original untouched.
        before = game.state_to_str(states[i])
        game.play([game.copy_state(states[i])], np.array([np.flatnonzero(obs.action_mask[i])[0]]))
        assert game.state_to_str(states[i]) == before
        # The engine and the eval opponents choose legal moves.
        live_states = [states[j] for j in live]
        movers = {"engine": game.engine_actions}
        movers.update(game.eval_opponents())
        for who, fn in movers.items():
            try:
                acts = np.asarray(fn(live_states))
            except NotImplementedError:
                continue
            assert acts.shape == (live.size,) and acts.dtype == np.int64, who
            assert obs.action_mask[live, acts].all(), f"{who} chose an illegal move"
        actions = np.array([rng.choice(np.flatnonzero(obs.action_mask[j])) for j in live])
        played = game.play([states[j] for j in live], actions)
        after = game.observe(played)
        # Who moves next is the game's to say (players need not alternate), but always 0 or 1.
        assert set(after.to_play) <= {0, 1}
        for j, s in zip(live, played):
            states[j] = s
        assert isinstance(game.action_to_str(int(actions[0])), str)
    assert seen_terminal or ply + 1 >= min(game.max_plies, 60)
    # check_state: the game's own starts (training and evaluation) pass it; a finished game does not
    starts = game.initial_states(3, np.random.default_rng(2))
    for s in starts + game.eval_states(3, np.random.default_rng(2)):
        game.check_state(s)
    obs = game.observe(states)
    for i in np.flatnonzero(obs.terminated):
        with pytest.raises(ValueError, match="already finished"):
            game.check_state(states[i])
    game.close()
    game.close()  # idempotent


@pytest.mark.parametrize("name", game_params())
def test_torchrl_env_specs_and_groups(name):
    env = BoardGameEnv(make(name), batch_size=(2, 3), seed=0)
    check_specs(env)
    td = env.reset()
    obs = td["observation"]
    # Group members (last batch dim) start from copies of one root.
    assert (obs == obs[:, :1]).all()
    assert (td["value"] == td["value"][:, :1]).all()
    assert (td["action_mask"].sum(-1) > 0).all()


def test_env_declares_truncated():
    env = BoardGameEnv(make("tictactoe"), batch_size=(2, 3))
    check_env_specs(env, seed=0)


# --- the tutorial: a separately installed game package ------------------------------


def check_gym_view(env_id: str, options: dict, bad_resets: list[tuple[dict, str]]) -> None:
    """What docs/envs.md promises a game author: the Gymnasium id registered from the package's
    own entry point, ``check_env`` passing, bad ``reset(options=...)`` requests one line each."""
    import gymnasium
    from gymnasium.utils.env_checker import check_env

    from chessrl.errors import InvalidState, UserError

    pluginmanager.register_gymnasium_envs()
    env = gymnasium.make(env_id, **options)
    check_env(env.unwrapped, skip_render_check=True)
    for reset_options, message in bad_resets:
        with pytest.raises(InvalidState, match=message) as info:
            env.reset(options=reset_options)
        assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="unknown key 'env.heapz'"):
        gymnasium.make(env_id, heapz=[1])
    env.close()


def test_example_nim_package_installs_and_registers(tmp_path, monkeypatch):
    """Install examples/games/chessrl_nim with pip (into a temporary target, so the shared
    venv is untouched) and check the core discovers it through its entry point."""
    target = pip_install_copy(REPO / "examples/games/chessrl_nim", tmp_path)
    assert (target / "chessrl_nim").is_dir()

    monkeypatch.syspath_prepend(str(target))  # what site-packages would be for a normal install
    importlib.invalidate_caches()
    pluginmanager.reset_plugin_manager()
    try:
        games = pluginmanager.games()
        assert "nim" in games and games["nim"].plugin == "nim"
        assert {"tictactoe", "connect_four"} <= set(games)
        game = games["nim"].obj(games["nim"].schema(), 0)
        assert game.values(game.initial_states(1, np.random.default_rng(0)))[0] == 1.0  # 3^4^5 != 0
        env = BoardGameEnv(game, batch_size=(2, 3))
        check_specs(env)
        # The perfect engine beats random from a winning start.
        opp = game.eval_opponents()
        state = game.initial_states(1, np.random.default_rng(0))[0]
        while not game.observe([state]).terminated[0]:
            mover = opp["perfect"] if game.observe([state]).to_play[0] == 0 else opp["random"]
            state = game.play([state], mover([state]))[0]
        assert state.to_play == 1  # player 1 must move with no objects left: player 0 won
        # The documented paths: eval_states, check_state, the Gym view through make_gym_env.
        random_starts = games["nim"].obj(games["nim"].schema(heaps=[3, 4, 5], start="random"), 0)
        drawn = random_starts.initial_states(50, np.random.default_rng(0))
        assert len({s.heaps for s in drawn}) > 1
        assert all(1 <= h <= m for s in drawn for h, m in zip(s.heaps, (3, 4, 5)))
        evals = random_starts.eval_states(5, np.random.default_rng(0))
        assert {s.heaps for s in evals} == {(3, 4, 5)}
        check_gym_view(
            "chessrl/Nim-v0",
            {"heaps": [2, 3], "start": "random"},
            bad_resets=[
                ({"heaps": [0, 0]}, r"already finished \(win\)"),
                ({"heaps": [1, 2, 3]}, r"3 heaps, but this game has 2"),
                ({"heap": [1, 2]}, r"nim reset options are 'heaps'"),
            ],
        )
    finally:
        pluginmanager.reset_plugin_manager()
        sys.modules.pop("chessrl_nim", None)
