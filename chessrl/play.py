"""``chessrl play CHECKPOINT``: a person plays a checkpoint's policy in the terminal, any game.

Only the game contract is used: :meth:`~chessrl.game.Game.render` draws the position,
:meth:`~chessrl.game.Game.parse_action` reads the person's move, and
:meth:`~chessrl.game.Game.format_action` names the policy's. A move that cannot be read or
is illegal gets one line and the prompt again; ``?`` lists the legal moves, ``quit`` (or the
end of input) abandons the game.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import numpy as np

from chessrl.errors import UserError


def env_overrides(items: list[str]) -> dict[str, Any]:
    """``--set env.KEY=VALUE`` items as ``{KEY: value}``; any other section is a UserError."""
    from chessrl.config import parse_value

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip().startswith("env.") or len(key.strip().split(".")) != 2:
            raise UserError(
                f"--set {item!r}: expected env.KEY=VALUE (a game option), "
                "e.g. --set env.start=standard"
            )
        out[key.strip()[4:]] = parse_value(value.strip())
    return out


def outcome(game, state: Any, human: int) -> str:
    """Who won a finished game, from the person's side, and why."""
    obs = game.observe([state])
    to_play, reason = int(obs.to_play[0]), obs.reason[0] or "over"
    value = float(game.values([state])[0])  # the side to move's value; exact at the end of a game
    if abs(value) < 0.5:
        verdict = "draw"
    else:
        winner = to_play if value > 0 else 1 - to_play
        verdict = "you win" if winner == human else "the policy wins"
    return (
        verdict if reason in ("win", "draw", "over") else f"{verdict} ({reason.replace('_', ' ')})"
    )


def play_game(
    player,
    *,
    human: int,
    greedy: bool,
    temperature: float,
    seed: int,
    inp: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
) -> str:
    """Play one game of ``player`` against the person at ``inp``/``out``; the last line said
    (``game over: ...`` or ``game abandoned ...``)."""
    game = player.game
    policy_move = player.mover(greedy=greedy, temperature=temperature, seed=seed)
    state = game.eval_states(1, np.random.default_rng(seed))[0]

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    sides = ("first", "second")
    say(
        f"{player.name} ({game.name}): you play the {sides[human]} player, "
        f"the policy the {sides[1 - human]}. "
        "Type a move, '?' for the legal moves, 'quit' to stop."
    )
    last = ""
    while not last:
        obs = game.observe([state])
        say(game.render(state))
        if obs.terminated[0]:
            last = f"game over: {outcome(game, state, human)}"
        elif int(obs.to_play[0]) != human:
            action = int(policy_move([state])[0])
            say(f"the policy plays {game.format_action(state, action)}")
            state = game.play([state], np.array([action], dtype=np.int64))[0]
        else:
            move, last = _read_move(game, state, obs.action_mask[0], inp, out, say)
            if move is not None:
                state = game.play([state], np.array([move], dtype=np.int64))[0]
    say(last)
    return last


def _read_move(
    game, state: Any, mask: np.ndarray, inp: TextIO, out: TextIO, say
) -> tuple[int | None, str]:
    """Prompt until the person types a legal move: (action, ""), or (None, why the game is
    abandoned) on ``quit`` or the end of input."""
    while True:
        out.write("your move: ")
        out.flush()
        line = inp.readline()
        text = line.strip()
        if not line or text.lower() in ("quit", "exit"):
            say()
            return None, "game abandoned" + ("" if line else " (end of input)")
        if not text:
            continue
        if text in ("?", "help"):
            say(
                "legal moves: "
                + ", ".join(game.format_action(state, int(a)) for a in np.flatnonzero(mask))
            )
            continue
        try:
            return int(game.parse_action(state, text)), ""
        except ValueError as exc:
            say(f"illegal move: {exc}; type ? for the legal moves")


def cmd_play(args: argparse.Namespace) -> int:
    from chessrl.evaluate import check_common_args
    from chessrl.player import load_player

    check_common_args(args)  # --seed, --temperature
    player = load_player(args.checkpoint, seed=args.seed, env=env_overrides(args.overrides))
    try:
        play_game(
            player,
            human=0 if args.side == "first" else 1,
            greedy=not args.sample,
            temperature=args.temperature,
            seed=args.seed,
        )
    finally:
        player.close()
    return 0
