"""Group rollouts: shapes, shared roots, masks, teacher forcing and a fixed opponent."""

import numpy as np
import torch

from chessrl import pluginmanager
from chessrl.env import BoardGameEnv
from chessrl.policy import Policy
from chessrl.rollout import collect


def _setup(R=4, G=8, seed=0):
    reg = pluginmanager.games()["tictactoe"]
    game = reg.obj(reg.schema(), seed)
    torch.manual_seed(0)
    policy = Policy(game.obs_vocab, game.obs_len, game.n_actions, 32, 1, 2, 64).eval()
    return game, BoardGameEnv(game, batch_size=(R, G), seed=seed), policy


def test_shape_roots_and_masks():
    game, env, policy = _setup()
    td = collect(
        env,
        policy,
        plies=9,
        temperature=1.0,
        train_plies="root",
        generator=torch.Generator().manual_seed(1),
    )
    assert td.batch_size == torch.Size([4, 8, 9])
    assert (
        td["observation"][:, :, 0] == td["observation"][:, :1, 0]
    ).all()  # a group shares its root
    # plies after a game ended are not played and not trained
    assert not (td["loss_mask"] & ~td["valid"]).any()
    # with train_plies = "root" only the root player's plies carry a loss
    assert not (td["loss_mask"] & ~td["mover_is_root"]).any()
    assert (td["loss_mask"][..., 0]).all()
    played = td["valid"].sum(-1)
    assert (played >= 5).all() and (played <= 9).all()  # tic-tac-toe lasts 5 to 9 plies


def test_teacher_forcing_is_a_coin_per_trajectory_and_masked():
    game, env, policy = _setup(R=8, G=16)
    td = collect(
        env,
        policy,
        plies=9,
        temperature=1.0,
        train_plies="both",
        teacher_forcing_prob=0.5,
        teacher_forcing_depth=2,
        generator=torch.Generator().manual_seed(3),
    )
    forced = td["forced_traj"][..., 0]
    assert (td["forced_traj"] == forced[..., None]).all()  # one coin for the whole trajectory
    assert 0 < forced.float().mean() < 1  # not one coin for the batch
    engine = td["engine_ply"]
    # forced trajectories: exactly their first 2 opponent plies came from the engine
    opp = ~td["mover_is_root"] & td["valid"]
    opp_rank = torch.cumsum(opp.long(), -1) - 1
    expected = forced[..., None] & opp & (opp_rank < 2)
    assert torch.equal(engine, expected)
    assert not (engine & td["loss_mask"]).any()  # forced plies never enter the loss
    # the engine's moves are the perfect player's: they never lose value
    rows = torch.nonzero(engine)
    assert len(rows) > 0
    assert (td["next", "reward"][engine] >= -1e-6).all()


def test_fixed_engine_opponent_is_never_trained():
    game, env, policy = _setup()
    td = collect(
        env,
        policy,
        plies=9,
        temperature=1.0,
        opponent="engine",
        train_plies="both",
        generator=torch.Generator().manual_seed(5),
    )
    opp = ~td["mover_is_root"] & td["valid"]
    assert torch.equal(td["engine_ply"], opp)
    assert not (td["loss_mask"] & opp).any()
    assert torch.equal(td["loss_mask"], td["mover_is_root"] & td["valid"])


def test_seeded_rollouts_repeat_and_leave_global_rng_alone():
    np_state = np.random.get_state()[1].copy()
    outs = []
    for _ in range(2):
        game, env, policy = _setup(seed=7)
        outs.append(
            collect(
                env, policy, plies=9, temperature=1.3, generator=torch.Generator().manual_seed(9)
            )
        )
    assert torch.equal(outs[0]["action"], outs[1]["action"])
    game, env, policy = _setup(seed=7)  # _setup seeds torch itself; the rollout must not
    before = torch.random.get_rng_state()
    collect(env, policy, plies=9, temperature=1.3, generator=torch.Generator().manual_seed(9))
    assert torch.equal(before, torch.random.get_rng_state())
    assert (np.random.get_state()[1] == np_state).all()


def test_expert_members_play_the_engine_move_at_the_root_and_are_trained():
    from chessrl.policy import log_probs

    game, env, policy = _setup(R=4, G=6)
    td = collect(
        env,
        policy,
        plies=3,
        temperature=1.0,
        train_plies="root",
        expert_members=2,
        generator=torch.Generator().manual_seed(5),
    )
    expert = td["expert_ply"]
    assert expert[:, :2, 0].all() and not expert[:, 2:].any() and not expert[..., 1:].any()
    # the engine's move, trained like a sampled one, with the policy's own log-prob of it
    root_obs = td["observation"][:, :, 0].reshape(-1, td["observation"].shape[-1])
    root_mask = td["action_mask"][:, :, 0].reshape(-1, td["action_mask"].shape[-1])
    lp = log_probs(policy, root_obs, root_mask, 1.0).reshape(4, 6, -1)
    taken = lp.gather(-1, td["action"][:, :, 0, None]).squeeze(-1)
    assert torch.equal(taken, td["sample_log_prob"][:, :, 0])
    assert td["loss_mask"][:, :2, 0].all()
