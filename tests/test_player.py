"""chessrl.player: a checkpoint of any game loaded as a player, and its one-line mistakes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chessrl.errors import UserError
from chessrl.player import label, load_player
from chessrl.policy import Policy


def save(path, *, game="tictactoe", env=None, sizes=(3, 9, 9), step=5):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        policy = Policy(*sizes, 16, 1, 2, 32)
    torch.save(
        {
            "policy": policy.state_dict(),
            "game": game,
            "step": step,
            "policy_sizes": dict(policy.sizes),
            "config": {"env": {"name": game, **(env or {})}},
        },
        path,
    )
    return policy


def test_a_checkpoint_outlives_a_removed_option_and_plays_like_its_policy(tmp_path):
    policy = save(tmp_path / "p.pt", env={"start": "mixed", "an_option_since_removed": 3})
    player = load_player(tmp_path / "p.pt", env={"random_plies": 1})
    assert player.name == "p step 5" and player.game.options.start == "mixed"
    assert player.game.options.random_plies == 1
    states = [0, 3**4]  # the empty board; X in the centre
    greedy = player.mover()(states)
    with torch.no_grad():
        logits = policy(torch.as_tensor(player.game.observe(states).tokens))
    logits[1, 4] = -torch.inf
    assert greedy.tolist() == logits.argmax(-1).tolist()
    sampled = [
        player.mover(greedy=False, temperature=2.0, seed=9)(states).tolist() for _ in range(2)
    ]
    assert sampled[0] == sampled[1]  # its own seeded generator
    assert np.all(player.game.observe(states).action_mask[[0, 1], sampled[0]])


def test_mistakes_are_one_line(tmp_path):
    save(tmp_path / "c4.pt", sizes=(3, 9, 9), game="connect_four")
    with pytest.raises(
        UserError, match="does not fit game 'connect_four'.*n_actions 9 \\(game: 7\\)"
    ):
        load_player(tmp_path / "c4.pt")
    save(tmp_path / "x.pt", game="no_such_game")
    with pytest.raises(UserError, match="game 'no_such_game', which is not installed"):
        load_player(tmp_path / "x.pt")
    save(tmp_path / "t.pt")
    with pytest.raises(UserError, match="env.nope"):
        load_player(tmp_path / "t.pt", env={"nope": 1})
    with pytest.raises(UserError, match="no checkpoint found"):
        load_player(tmp_path)


def test_labels_name_run_and_step(tmp_path):
    ckpts = tmp_path / "clean-20260101-120000" / "checkpoints"
    assert label(ckpts / "step_0000400.pt") == "clean-20260101-120000 step 400"
    assert label(ckpts / "initial.pt") == "clean-20260101-120000 initial"
    assert label(tmp_path / "pretrained-d256.pt") == "pretrained-d256"
    assert label(tmp_path / "pretrained-d256.pt", 12) == "pretrained-d256 step 12"
