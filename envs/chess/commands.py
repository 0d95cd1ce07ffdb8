"""The chess plugin's commands, ``chessrl pretrain`` and ``chessrl uci``, and its flags of
``chessrl eval``: their arguments only.

This module is imported whenever the ``chessrl`` command starts (``--help`` and ``--version``
included), so it imports nothing heavy: each command imports its implementation (torch,
python-chess, Stockfish) when it runs. ``tests/test_cli.py`` checks that starting the CLI
imports no torch.
"""

from __future__ import annotations

import argparse

from chessrl.envs.chess.options import ELO_RANGE


def add_commands(subparsers) -> None:
    """Add ``pretrain`` and ``uci`` to the ``chessrl`` command's subparsers (chess's ``eval``
    flags join the core command through :func:`add_eval_arguments`)."""
    add_pretrain_command(subparsers)
    add_uci_command(subparsers)


def add_eval_arguments(group) -> None:
    """Chess's own flags of ``chessrl eval`` (an argument group of the core command): a
    Stockfish opponent, balanced openings, PGN records, the held-out benchmark and ladder."""
    g = group.add_mutually_exclusive_group()
    g.add_argument("--skill", type=int, help="Stockfish Skill Level 0..20")
    g.add_argument("--depth", type=int, help="full-strength Stockfish limited to this depth")
    g.add_argument("--nodes", type=int, help="full-strength Stockfish limited to this many nodes")
    g.add_argument(
        "--elo",
        type=int,
        help=f"UCI_LimitStrength at this UCI_Elo ({ELO_RANGE[0]}..{ELO_RANGE[1]})",
    )
    group.add_argument("--pgn", help="write every game to this PGN file")
    group.add_argument(
        "--opening-plies",
        type=int,
        default=8,
        help="random plies of each opening (default 8; 0 = start position)",
    )
    group.add_argument(
        "--balance",
        type=float,
        default=0.15,
        help="keep openings whose Stockfish value is within this of 0 (value scale [-1, 1]; "
        "default 0.15 ~ 80 cp)",
    )
    group.add_argument(
        "--max-plies",
        type=int,
        default=200,
        help="adjudicate games still running after this many plies (default 200)",
    )
    group.add_argument(
        "--adjudicate",
        type=float,
        default=0.5,
        help="value (side to move, [-1, 1]) an adjudicated game's winner needs "
        "(default 0.5 ~ 300 cp)",
    )
    group.add_argument(
        "--engines", type=int, help="Stockfish processes (default: the checkpoint's [env] engines)"
    )
    group.add_argument(
        "--benchmark",
        action="store_true",
        help="score the held-out benchmark instead of playing one opponent: top-1/top-3 agreement "
        "with Stockfish, mate in one, material wins, with 95%% CIs (docs/benchmark.md)",
    )
    group.add_argument(
        "--ladder",
        action="store_true",
        help="with the benchmark, play --games games against every rated rung of the checkpoint's "
        "[env] eval_ladder and estimate an Elo on the ladder's scale (random mover = 0)",
    )


def run_eval(args: argparse.Namespace) -> int:
    """``chessrl eval`` of a chess checkpoint (:func:`chessrl.envs.chess.evaluate.cmd_eval`)."""
    from chessrl.envs.chess.evaluate import cmd_eval

    return cmd_eval(args)


def add_pretrain_command(subparsers) -> None:
    """``chessrl pretrain CONFIG``: Stockfish distillation into a starting checkpoint."""
    p = subparsers.add_parser(
        "pretrain", help="pretrain the chess policy by Stockfish distillation (docs/pretraining.md)"
    )
    p.add_argument("config", help="pretraining TOML, e.g. examples/pretrain.toml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable), e.g. --set train.epochs=2",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run(args: argparse.Namespace) -> int:
        from chessrl.envs.chess.pretrain import cmd_pretrain

        return cmd_pretrain(args)

    p.set_defaults(func=run)


def add_uci_command(subparsers) -> None:
    """``chessrl uci CHECKPOINT``: the policy as a UCI engine (chess GUIs, python-chess)."""
    p = subparsers.add_parser(
        "uci",
        help="a chess checkpoint as a UCI engine, for chess GUIs and python-chess "
        "(docs/chess.md#uci-engine)",
    )
    p.add_argument(
        "checkpoint",
        help="a checkpoint file (step_*.pt, initial.pt, a pretrained .pt) or a run directory",
    )

    def run(args: argparse.Namespace) -> int:
        from chessrl.envs.chess.uci import cmd_uci

        return cmd_uci(args)

    p.set_defaults(func=run)
