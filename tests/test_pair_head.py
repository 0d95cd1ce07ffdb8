"""The 'pairs' action head: a game's declared action structure, checkpoints, exact first ratio."""

from __future__ import annotations

import chess
import numpy as np
import pytest
import torch

from chessrl.config import load_config
from chessrl.envs.chess import encoding as enc
from chessrl.envs.chess.starts import random_play
from chessrl.errors import UserError
from chessrl.metrics import read_metrics
from chessrl.policy import Policy, build_policy
from chessrl.trainer import train


def _positions(n: int, seed: int) -> list[chess.Board]:
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        board = chess.Board()
        if random_play(board, int(rng.integers(0, 80)), rng):  # False: the game ended on the way
            out.append(board)
    return out


def test_chess_structure_points_at_the_moving_piece_and_its_target_square():
    s = enc.ACTION_STRUCTURE
    assert s.shape == (enc.N_ACTIONS, 3)
    for a, move in enumerate(enc.MOVES):
        assert (s[a, 0], s[a, 1]) == (move.from_square, move.to_square)
        assert s[a, 2] == (
            0
            if move.promotion is None
            else 1 + [chess.QUEEN, chess.ROOK, chess.BISHOP, chess.KNIGHT].index(move.promotion)
        )
    # in the observation (mirrored for black) a legal action's source token holds an own piece
    # and its target token holds no own piece, for both colours
    for board in _positions(200, seed=3):
        tokens = enc.encode([enc.board_features(board, False, 0)])[0]
        for move in board.legal_moves:
            a = enc.move_to_action(move, board.turn)
            assert 1 <= tokens[s[a, 0]] <= 6, (board.fen(), move.uci())
            assert not 1 <= tokens[s[a, 1]] <= 6, (board.fen(), move.uci())


def test_pairs_policy_round_trips_through_its_sizes_and_state():
    torch.manual_seed(0)
    structure = torch.as_tensor(enc.ACTION_STRUCTURE)
    p = Policy(
        enc.OBS_VOCAB,
        enc.OBS_LEN,
        enc.N_ACTIONS,
        32,
        1,
        2,
        64,
        head="pairs",
        pair_dim=16,
        pair_kinds=5,
        structure=structure,
    ).eval()
    tokens = torch.as_tensor(
        enc.encode([enc.board_features(b, False, 0) for b in _positions(8, seed=5)])
    )
    q = Policy(**p.sizes).eval()  # what a checkpoint reader does: sizes, then the state
    q.load_state_dict(p.state_dict())
    assert torch.equal(q.pair_head.structure, structure)
    assert torch.equal(p(tokens), q(tokens))
    # logits depend on the board through the two squares: moving the pieces changes them
    assert not torch.equal(p(tokens[:1]), p(tokens[1:2]))


def test_pairs_head_needs_a_game_that_declares_its_structure(tiny_config):
    cfg = load_config(tiny_config)
    cfg.policy.head = "pairs"

    class Opaque:
        name, obs_vocab, obs_len, n_actions = "opaque", 3, 9, 9

        def action_structure(self):
            return None

    with pytest.raises(UserError, match="action_structure"):
        build_policy(cfg.policy, Opaque())


def test_pairs_head_trains_with_the_first_ratio_exactly_one(tiny_config, tmp_path):
    cfg = load_config(tiny_config)
    cfg.policy.head = "pairs"
    cfg.policy.pair_dim = 8
    run_dir = train(cfg, tmp_path / "run", progress=False, echo=lambda s: None)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert len(rows) == cfg.trainer.steps
    assert all(
        r["train/ratio_first_epoch"] == 1.0 and r["train/ratio_first_epoch_maxdev"] == 0.0
        for r in rows
    )
    # the run learned something: its weights moved away from the initial ones
    assert any(r["train/grad_norm"] > 0 for r in rows if "train/grad_norm" in r)
