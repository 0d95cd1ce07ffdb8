"""``chessrl eval CHECKPOINT``: a checkpoint against its game's evaluation opponents, any game.

The protocol is the trainer's evaluation (docs/evaluation.md): for every opponent of
``game.eval_opponents()`` (or those ``--opponent`` names), ``--games`` games from
``game.eval_states`` drawn from ``--seed``, each start played once with each side, games
still running at the game's ``max_plies`` adjudicated by ``game.values``; one row per player
with the score's Wilson 95% interval and its Elo difference; then ``game.benchmark``.

A game can bring its own evaluation through the ``chessrl_register_evaluators`` hook (chess:
Stockfish opponents by strength, balanced openings, PGN records, the held-out benchmark and
ladder): its flags join this command's under the game's name, and its ``run(args)`` evaluates
that game's checkpoints. This module imports nothing heavy until a command runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from chessrl import keys as K
from chessrl import pluginmanager
from chessrl.errors import UserError

if TYPE_CHECKING:
    from chessrl.run import Run

HEADER = (
    f"{'player':<12} {'games':>5} {'W':>4} {'D':>4} {'L':>4}"
    "  score [95% CI]        Elo [95% CI]  terminations"
)


def elo_text(elo: float, lo: float, hi: float) -> str:
    """An Elo difference and its 95% interval; a score of 0 (or 1) has no finite Elo and is
    said as such, with the bound the games do give."""
    if elo == -math.inf:
        return f"below the measurable range (< {hi:+.0f})"
    if elo == math.inf:
        return f"above the measurable range (> {lo:+.0f})"

    def one(x: float) -> str:
        return "-inf" if x == -math.inf else "+inf" if x == math.inf else f"{round(x):+d}"

    return f"{one(elo)} [{one(lo)}, {one(hi)}]"


def format_row(name: str, result: Any) -> str:
    """One table row of a :class:`chessrl.match.MatchResult`."""
    lo, hi = result.interval()
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(result.reasons.items()))
    return (
        f"{name:<12} {result.games:>5} {result.wins:>4} {result.draws:>4} {result.losses:>4}  "
        f"{result.score:5.3f} [{lo:5.3f}, {hi:5.3f}]  {elo_text(*result.elo())}  {reasons}"
    )


def random_mover(game, seed: int) -> Callable[[list[Any]], Any]:
    """A uniformly random legal mover with its own generator."""
    import numpy as np

    rng = np.random.default_rng([seed, 0x5EED])

    def choose(states: list[Any]) -> np.ndarray:
        masks = game.observe(states).action_mask
        return np.array(
            [rng.choice(np.flatnonzero(m)) if m.any() else 0 for m in masks], dtype=np.int64
        )

    return choose


def initial_checkpoint(path: str | Path) -> Path | None:
    """The run's ``initial.pt`` next to a checkpoint (or in a run directory's checkpoints/), or
    ``<stem>.initial.pt`` beside a pretrained checkpoint ``<stem>.pt``; None if there is none."""
    p = Path(path)
    cands = (
        [p / "checkpoints" / "initial.pt", p / "initial.pt"]
        if p.is_dir()
        else [p.with_name(f"{p.stem}.initial.pt"), p.parent / "initial.pt"]
    )
    for cand in cands:
        if cand.exists() and cand.resolve() != p.resolve():
            return cand
    return None


def evaluate(
    player, args: argparse.Namespace, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Every player (the checkpoint; with ``--baselines`` a random mover and the run's
    initial.pt) against every chosen opponent, on the same starts with the same seeds."""
    import numpy as np

    from chessrl import checkpoint as ckpt_io
    from chessrl.match import play_match
    from chessrl.player import build_policy, game_name

    game = player.game
    opponents = game.eval_opponents()
    if not opponents:
        raise UserError(
            f"game '{game.name}' has no evaluation opponents (its Game.eval_opponents() is empty): "
            "there is nothing to play against"
        )
    unknown = [o for o in args.opponent if o not in opponents]
    if unknown:
        raise UserError(
            f"--opponent {unknown[0]}: game '{game.name}' has the evaluation opponents "
            f"{', '.join(opponents)}"
        )
    chosen = args.opponent or list(opponents)
    if log is not None:
        mode = "greedy" if not args.sample else f"sampled at temperature {args.temperature}"
        log(
            f"{player.name} ({game.name}): {args.games} games per opponent "
            f"from the game's evaluation starts (seed {args.seed}), each start with both sides, "
            f"adjudicated after {game.max_plies} plies, {mode}"
        )
    players: dict[str, Any] = {"checkpoint": player.policy}
    if args.baselines:
        players["random"] = "random"
        init = initial_checkpoint(player.path)
        if init is not None:
            init_state = ckpt_io.load(init)
            if game_name(init_state) != game.name:
                raise UserError(
                    f"{init}: the --baselines initial checkpoint plays "
                    f"'{game_name(init_state)}', this checkpoint '{game.name}'; move it aside "
                    "or drop --baselines"
                )
            players["initial"] = build_policy(init_state, game, str(init))
        elif log is not None:
            print(
                "(no initial.pt next to the checkpoint: the initial baseline is skipped)",
                file=sys.stderr,
            )
    out: dict[str, Any] = {
        "checkpoint": str(player.path),
        "name": player.name,
        "game": game.name,
        "protocol": {
            "games": args.games,
            "seed": args.seed,
            "greedy": not args.sample,
            "temperature": args.temperature,
            "max_plies": game.max_plies,
        },
        "opponents": {},
        "benchmark": {},
    }
    matches: dict[str, tuple[float, int]] = {}
    for name in chosen:
        starts = game.eval_states((args.games + 1) // 2, np.random.default_rng([args.seed, 0xE7A1]))
        if log is not None:
            log(f"vs {name}")
            log(HEADER)
        rows = out["opponents"][name] = {}
        for who, plays in players.items():
            game.reseed(
                args.seed
            )  # every player meets the same opponent draws (as the trainer does)
            opponent = game.eval_opponents()[name]
            plays = random_mover(game, args.seed) if who == "random" else plays
            res = play_match(
                game,
                plays,
                opponent,
                games=args.games,
                temperature=args.temperature,
                greedy=not args.sample,
                seed=args.seed,
                starts=[game.copy_state(s) for s in starts],
            )
            rows[who] = res.summary()
            if who == "checkpoint":
                matches[name] = (res.score, res.games)
            if log is not None:
                log(format_row(who, res))
    out["benchmark"] = {k: float(v) for k, v in game.benchmark(player.policy, matches).items()}
    if log is not None and out["benchmark"]:
        log("benchmark: " + "; ".join(f"{k} {v:.3f}" for k, v in out["benchmark"].items()))
    return out


MAX_GAMES = 100_000


def check_common_args(args: argparse.Namespace) -> None:
    """One :class:`UserError` line for a bad value of the flags every game's eval (and
    ``chessrl play``) shares: ``--games``, ``--seed``, ``--temperature``, ``--pgn``."""
    games = getattr(args, "games", None)
    if games is not None and not 1 <= games <= MAX_GAMES:
        raise UserError(f"--games {games}: play 1 to {MAX_GAMES:,} games")
    seed = getattr(args, "seed", 0)
    if not 0 <= seed < 2**63:
        raise UserError(f"--seed {seed}: expected an integer from 0 to 2^63-1")
    temperature = getattr(args, "temperature", 1.0)
    if not (temperature > 0 and math.isfinite(temperature)):
        raise UserError(f"--temperature {temperature}: expected a finite number > 0")
    pgn = getattr(args, "pgn", None)
    if pgn is not None:
        check_output_file(pgn, "--pgn")


def check_output_file(path: str, flag: str) -> None:
    """A file a command will write: named, not a directory, in an existing directory."""
    from pathlib import Path

    if not str(path).strip():
        raise UserError(f"{flag} '': give a file name")
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{flag} {path}: a directory; give a file name")
    if not p.parent.is_dir():
        raise UserError(f"{flag} {path}: the directory {p.parent} does not exist")


def cmd_eval(args: argparse.Namespace) -> int:
    from chessrl import checkpoint as ckpt_io
    from chessrl.match import MatchError
    from chessrl.play import env_overrides
    from chessrl.player import game_name, player_from_state, resolve

    path = resolve(args.checkpoint)
    state = ckpt_io.load(path)
    name = game_name(state)
    for game, dests in args.game_flags.items():  # another game's flags would be ignored: say so
        used = [d for d in dests if getattr(args, d) != args.game_defaults[d]]
        if game != name and used:
            raise UserError(
                f"--{used[0].replace('_', '-')} is a {game} option of chessrl eval; "
                f"{args.checkpoint} is a {name} checkpoint "
                "(chessrl eval --help lists the options of each game)"
            )
    check_common_args(args)  # before any game's own evaluation prints or writes anything
    own = pluginmanager.evaluators().get(name)
    if own is not None:
        return int(own.obj(args) or 0)
    player = player_from_state(path, state, seed=args.seed, env=env_overrides(args.overrides))
    try:
        out = evaluate(player, args, log=None if args.json else print)
    except MatchError as exc:
        print(
            f"chessrl: error: evaluation stopped, {exc} (a failure is never scored)",
            file=sys.stderr,
        )
        return 1
    finally:
        player.close()
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """``--sample`` and ``--temperature``: how a checkpoint's policy picks its moves
    (``chessrl eval`` and ``chessrl play``)."""
    p.add_argument(
        "--sample",
        action="store_true",
        help="the policy samples its moves instead of playing greedily",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="sampling temperature with --sample (default 1)",
    )


def add_eval_command(subparsers) -> None:
    """``chessrl eval``: the core flags, then each game evaluator's own under its name."""
    p = subparsers.add_parser(
        "eval",
        help="play a checkpoint against its game's evaluation opponents; scores "
        "with 95%% CIs (docs/evaluation.md)",
    )
    p.add_argument(
        "checkpoint",
        help="a checkpoint file (step_*.pt, initial.pt, a pretrained .pt) or a run directory",
    )
    p.add_argument(
        "--games",
        type=int,
        default=16,
        help="games per opponent (each start with both sides; default 16)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the starts, the opponents and of sampling (default 0)",
    )
    add_sampling_arguments(p)
    p.add_argument(
        "--baselines",
        action="store_true",
        help="also play a random mover and the run's initial.pt under the same protocol",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable results")
    p.add_argument(
        "--opponent",
        action="append",
        default=[],
        metavar="NAME",
        help="play only this evaluation opponent of the game (repeatable; default all)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="env.KEY=VALUE",
        help="override a game option of the checkpoint (repeatable)",
    )
    flags: dict[str, list[str]] = {}
    for reg in pluginmanager.evaluators().values():
        group = p.add_argument_group(f"{reg.name} checkpoints ({reg.plugin} plugin)")
        reg.schema(group)
        flags[reg.name] = [a.dest for a in group._group_actions]
    defaults = {d: p.get_default(d) for dests in flags.values() for d in dests}
    p.set_defaults(func=cmd_eval, game_flags=flags, game_defaults=defaults)


def eval_line(step: int, metrics: dict[str, float]) -> str:
    """One line for an evaluation: every ``eval/...`` number that carries a 95% interval
    (``_lo``/``_hi``): match scores, benchmark proportions, an Elo."""
    parts = []
    for key, value in metrics.items():
        lo, hi = metrics.get(f"{key}_lo"), metrics.get(f"{key}_hi")
        if not key.startswith("eval/") or lo is None or hi is None:
            continue
        if key.endswith("/elo") and key != "eval/ladder/elo":
            continue  # an opponent's Elo difference repeats its score
        name = key[len("eval/") :].removesuffix("/score")
        if key.endswith("/elo"):
            parts.append(f"{name} {value:+.0f} [{lo:+.0f}, {hi:+.0f}]")
        else:
            parts.append(f"{name} {value:.3f} [{lo:.3f}, {hi:.3f}]")
    took = metrics.get(K.TIME_EVAL)
    return (
        f"eval step {step}: "
        + ("; ".join(parts) or "no metrics with intervals")
        + (f" ({took:.0f} s)" if took is not None else "")
    )


def run_eval(run: Run, step: int) -> dict[str, float]:
    """Play the game's evaluation opponents; ``eval/<opponent>/...`` metrics."""
    import numpy as np

    from chessrl.match import play_match

    t0 = time.perf_counter()
    out: dict[str, float] = {}
    matches: dict[str, tuple[float, int]] = {}
    for name, opponent in run.game.eval_opponents().items():
        n = run.config.trainer.eval_games
        starts = run.game.eval_states((n + 1) // 2, np.random.default_rng([run.config.seed, step]))
        res = play_match(
            run.game,
            run.policy,
            opponent,
            games=n,
            temperature=run.config.rollout.temperature,
            greedy=True,
            seed=run.config.seed + step,
            starts=starts,
        )
        out.update(res.metrics(f"eval/{name}"))
        matches[name] = (res.score, res.games)
    benchmark = run.game.benchmark(run.policy, matches)
    out.update({f"eval/{k}": float(v) for k, v in benchmark.items()})
    run.plugins.eval_end(out, step)
    out[K.TIME_EVAL] = time.perf_counter() - t0
    return out
