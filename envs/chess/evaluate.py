"""``chessrl eval CHECKPOINT``: matches against Stockfish with confidence intervals.

The protocol (docs/evaluation.md): ``games // 2`` random balanced openings of
``opening_plies`` plies are drawn from ``seed``; each is played once with each colour (the
policy is White in odd-numbered games). Games run together, each ply's engine moves spread
over the Stockfish pool. A game still running after ``max_plies`` plies is adjudicated from
Stockfish's value of the final position (``adjudicate``). Rows: the checkpoint and, with
``--baselines``, a uniformly random mover and the run's ``initial.pt``, all on the same
openings with the same seeds. An engine failure stops the evaluation with an error: it is
never scored as a draw.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import chess
import chess.engine
import numpy as np

from chessrl import checkpoint as ckpt_io
from chessrl.envs.chess import encoding as enc
from chessrl.envs.chess.game import ChessGame, ChessState
from chessrl.envs.chess.options import ELO_RANGE, ChessOptions
from chessrl.envs.chess.pgn import game_record, result_string, write_game
from chessrl.envs.chess.starts import random_play
from chessrl.envs.chess.stockfish import EngineFailure, StockfishPool
from chessrl.errors import UserError
from chessrl.evaluate import HEADER, format_row, initial_checkpoint
from chessrl.match import MatchError, MatchResult, play_match
from chessrl.player import build_policy, game_name, label
from chessrl.policy import Policy
from chessrl.rundir import write_text
from chessrl.schema import build

SKILL_MAX_DEPTH = 12  # depth cap of Skill Level / UCI_Elo opponents (see Opponent)


@dataclass(frozen=True)
class Opponent:
    """A Stockfish opponent: ``kind`` in skill | elo | depth | nodes | env, and its value.

    * ``skill S``: ``Skill Level`` S. Stockfish picks its (randomly weakened) move when it
      completes depth 1 + S and ignores deeper iterations, so the search is limited to depth
      ``min(S + 1, 12)``: the same moves as an unlimited search for S < 12, without the waste.
    * ``elo E``: ``UCI_LimitStrength`` with ``UCI_Elo`` E (1350..2850 in Stockfish 15.1),
      which Stockfish maps to a fractional skill level ``((E - 1346.6) / 143.4) ^ (1 / 0.806)``
      (0..19); the depth limit follows that level as for ``skill``.
    * ``depth D`` / ``nodes N``: full strength, limited by depth or nodes (deterministic).
    * ``env``: the checkpoint's ``[env] opponent_skill`` at ``opponent_depth`` (the trainer's
      ``eval/stockfish`` opponent).
    Skill and Elo opponents draw their weakening from Stockfish's own time-seeded generator,
    so their games are not exactly repeatable; depth and nodes opponents are.
    """

    kind: str
    value: int
    depth: int = 0  # for kind "env"

    def limit_and_options(self) -> tuple[chess.engine.Limit, dict[str, Any]]:
        if self.kind == "skill":
            opts = {} if self.value >= 20 else {"Skill Level": self.value}
            return chess.engine.Limit(depth=min(self.value + 1, SKILL_MAX_DEPTH)), opts
        if self.kind == "elo":
            level = min(max(((self.value - 1346.6) / 143.4) ** (1 / 0.806), 0.0), 19.0)
            return (
                chess.engine.Limit(depth=min(int(level) + 1, SKILL_MAX_DEPTH)),
                {"UCI_LimitStrength": True, "UCI_Elo": self.value},
            )
        if self.kind == "depth":
            return chess.engine.Limit(depth=self.value), {}
        if self.kind == "nodes":
            return chess.engine.Limit(nodes=self.value), {}
        if self.kind == "env":
            return chess.engine.Limit(depth=self.depth), (
                {} if self.value >= 20 else {"Skill Level": self.value}
            )
        raise ValueError(f"unknown opponent kind {self.kind!r}")

    def describe(self) -> str:
        if self.kind == "env":
            return f"stockfish skill {self.value} depth {self.depth}"
        return f"stockfish {self.kind} {self.value}"

    def pgn_name(self) -> str:
        """The opponent with the settings it plays under, e.g.
        ``Stockfish (Skill Level 0, depth 1)``."""
        limit, options = self.limit_and_options()
        settings = [f"{k} {v}" for k, v in options.items() if k != "UCI_LimitStrength"]
        settings.append(f"depth {limit.depth}" if limit.depth else f"nodes {limit.nodes}")
        return f"Stockfish ({', '.join(settings)})"


def stockfish_opponent(
    pool: StockfishPool, spec: Opponent
) -> Callable[[Sequence[ChessState]], np.ndarray]:
    """A match opponent: the pool's move for each state under ``spec``, spread over the engines.

    A failure raises the pool's ``EngineFailure`` with ``index`` set to the failed state.
    """
    limit, options = spec.limit_and_options()

    def play(states: Sequence[ChessState]) -> np.ndarray:
        moves = pool.play_moves([s.board for s in states], limit, options)
        return np.array(
            [enc.move_to_action(m, s.board.turn) for m, s in zip(moves, states)], dtype=np.int64
        )

    return play


def random_mover(game: ChessGame, seed: int) -> Callable[[Sequence[ChessState]], np.ndarray]:
    """A uniformly random legal mover drawing from its own generator."""
    rng = np.random.default_rng([seed, 0x5EED])
    return lambda states: game.random_actions(states, rng)


def balanced_openings(
    n: int,
    plies: int,
    seed: int,
    pool: StockfishPool | None,
    max_value: float,
    tries_per_opening: int = 200,
) -> list[chess.Board]:
    """``n`` distinct openings of ``plies`` uniformly random plies from the standard position
    whose Stockfish value (side to move, in [-1, 1]) is within ``max_value`` of 0. The draw
    uses only ``np.random.default_rng([seed, 0x09E4])``; ``plies = 0`` gives the start position."""
    if plies == 0:
        return [chess.Board() for _ in range(n)]
    rng = np.random.default_rng([seed, 0x09E4])
    found: list[chess.Board] = []
    seen: set[str] = set()
    tries = 0
    while len(found) < n:
        batch = []
        while len(batch) < max(2 * (n - len(found)), 4):
            board = chess.Board()
            tries += 1
            if tries > tries_per_opening * n:
                raise UserError(
                    f"found only {len(found)} of {n} balanced openings of {plies} plies in {tries} "
                    f"tries; raise --balance (now {max_value}) or lower --opening-plies"
                )
            if random_play(board, plies, rng) and board.epd() not in seen:
                seen.add(board.epd())
                batch.append(board)
        values = (
            pool.values(batch) if pool is not None and max_value < 1.0 else np.zeros(len(batch))
        )
        found.extend(b for b, v in zip(batch, values) if abs(float(v)) <= max_value)
    return found[:n]


def load_policy(path: str | Path) -> tuple[Policy, dict[str, Any], Path]:
    """The policy of a chess checkpoint (a file or a run directory), its dict and path
    (the core's loader, :func:`chessrl.player.build_policy`)."""
    resolved = ckpt_io.resolve(path)
    state = ckpt_io.load(resolved)
    if game_name(state) != "chess":
        raise UserError(f"{path}: a checkpoint of game {game_name(state)!r}, not chess")
    game = ChessGame(reward="none", features=enc.features_of(state.get("policy_sizes") or {}))
    return build_policy(state, game, str(resolved)), state, resolved


@dataclass
class EvalResult:
    opponent: str
    protocol: dict[str, Any]
    rows: dict[str, MatchResult] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "opponent": self.opponent,
            "protocol": self.protocol,
            "rows": {name: r.summary() for name, r in self.rows.items()},
        }


def evaluate(
    players: dict[str, Any],
    env_options: ChessOptions,
    opponent: Opponent,
    *,
    games: int = 16,
    seed: int = 0,
    opening_plies: int = 8,
    balance: float = 0.15,
    max_plies: int = 200,
    adjudicate: float = 0.5,
    greedy: bool = True,
    temperature: float = 1.0,
    pgn: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    names: dict[str, str] | None = None,
) -> EvalResult:
    """Play every player (a Policy or a states->actions callable; the string "random" is a
    random mover) against ``opponent`` under the same protocol: the same openings, seeds and
    adjudication. ``pgn``: a file every game is appended to, the players named by ``names``
    (row name -> e.g. the checkpoint's run and step; default the row name)."""
    check_protocol(games, opening_plies, balance, adjudicate, max_plies)
    opts = build(
        ChessOptions,
        {
            "reward": "none",
            "max_plies": max_plies,
            "stockfish_path": env_options.stockfish_path,
            "engines": env_options.engines,
            "hash_mb": env_options.hash_mb,
            "depth": env_options.depth
            or (0 if env_options.nodes else 8),  # static reward: adjudicate at 8
            "nodes": env_options.nodes,
            "value_scale": env_options.value_scale,
            "engine_retries": env_options.engine_retries,
            "engine_timeout": env_options.engine_timeout,
        },
        prefix="env",
    )
    game = ChessGame(opts, seed)
    pool = StockfishPool(
        opts.stockfish_path,
        opts.engines,
        opts.hash_mb,
        depth=opts.depth if opts.depth > 0 else None,
        nodes=opts.nodes if opts.nodes > 0 else None,
        cache_size=10_000,
        value_scale=opts.value_scale,
        retries=opts.engine_retries,
        timeout=opts.engine_timeout,
    )
    # the games are kept in memory and written (atomically) only when every game was played:
    # an interrupted or failed evaluation leaves the previous file as it was
    fh = io.StringIO() if pgn else None
    try:
        openings = balanced_openings((games + 1) // 2, opening_plies, seed, pool, balance)
        starts = [ChessState(b) for b in openings]
        protocol = {
            "games": games,
            "seed": seed,
            "opening_plies": opening_plies,
            "balance": balance,
            "max_plies": max_plies,
            "adjudicate": adjudicate,
            "greedy": greedy,
            "temperature": temperature,
            "adjudication_engine": {"depth": opts.depth, "nodes": opts.nodes},
            "openings": [" ".join(m.uci() for m in b.move_stack) for b in openings],
        }
        out = EvalResult(opponent.describe(), protocol)
        opp = stockfish_opponent(pool, opponent)

        def adjudicator(states: Sequence[ChessState]) -> np.ndarray:
            return pool.values([s.board for s in states])

        for name, player in players.items():
            if isinstance(player, str) and player == "random":
                player = random_mover(game, seed)

            def on_game(
                i: int, state: ChessState, score: float, reason: str, name: str = name
            ) -> None:
                if fh is None:
                    return
                white = i % 2 == 0
                me, them = (names or {}).get(name, name), opponent.pgn_name()
                write_game(
                    fh,
                    game_record(
                        state.board,
                        white=me if white else them,
                        black=them if white else me,
                        result=result_string(white, score),
                        termination=reason,
                        opening_plies=opening_plies,
                        round_=i + 1,
                        event=f"chessrl eval: {name} vs {opponent.describe()}",
                    ),
                )

            res = play_match(
                ChessGame(replace(opts, features=enc.features_of(player)), seed),
                player,
                opp,
                games=games,
                temperature=temperature,
                greedy=greedy,
                seed=seed,
                adjudicate=adjudicate,
                starts=starts,
                on_game=on_game,
                adjudicator=adjudicator,
            )
            out.rows[name] = res
            if log is not None:
                log(format_row(name, res))
        if fh is not None and pgn:
            write_text(Path(pgn), fh.getvalue())
        return out
    finally:
        pool.close()
        game.close()


def opponent_from_args(args: argparse.Namespace, env: ChessOptions) -> Opponent:
    if args.elo is not None:
        lo, hi = ELO_RANGE
        if not lo <= args.elo <= hi:
            raise UserError(
                f"--elo {args.elo} is outside Stockfish 15.1's UCI_Elo range {lo}..{hi}; "
                "use --skill 0..20 for weaker play"
            )
        return Opponent("elo", args.elo)
    if args.skill is not None:
        if not 0 <= args.skill <= 20:
            raise UserError(f"--skill {args.skill} is outside Stockfish's Skill Level range 0..20")
        return Opponent("skill", args.skill)
    if args.depth is not None:
        if not 1 <= args.depth <= 40:
            raise UserError(f"--depth {args.depth}: expected 1..40")
        return Opponent("depth", args.depth)
    if args.nodes is not None:
        if args.nodes < 1:
            raise UserError(f"--nodes {args.nodes}: expected a positive node budget")
        return Opponent("nodes", args.nodes)
    return Opponent("env", env.opponent_skill, env.opponent_depth)


def env_options_of(state: dict[str, Any], engines: int | None) -> ChessOptions:
    env = dict((state.get("config") or {}).get("env") or {})
    env.pop("name", None)
    known = {f for f in ChessOptions.__dataclass_fields__}
    env = {k: v for k, v in env.items() if k in known}
    if engines is not None:
        env["engines"] = engines
    return build(ChessOptions, env, prefix="env")


def _ci(x: float, lo: float, hi: float) -> str:
    return f"{x:5.3f} [{lo:5.3f}, {hi:5.3f}]"


def benchmark_report(
    players: dict[str, Any], env: ChessOptions, args: argparse.Namespace
) -> dict[str, Any]:
    """``--benchmark`` / ``--ladder``: every player's held-out scores and, with ``--ladder``, its
    games against the ladder's rungs and its Elo on the benchmark's scale (docs/benchmark.md)."""
    from chessrl.envs.chess.benchmark import (
        BenchmarkSpec,
        choose_fn,
        elo_estimate,
        ladder_results,
        load_default,
        random_mover,
    )

    bench = load_default(
        BenchmarkSpec(
            seed=env.benchmark_seed, stockfish_path=env.stockfish_path, engines=env.engines
        )
    )
    rungs = [r for r in env.eval_ladder if r in bench.ratings] if args.ladder else []
    pool = (
        StockfishPool(env.stockfish_path, env.engines, env.hash_mb, depth=8, cache_size=10_000)
        if rungs
        else None
    )
    out: dict[str, Any] = {"benchmark": str(bench.path), "players": {}}
    answers: dict[str, dict[str, list[str]]] = {}
    if not args.json:
        print(
            f"held-out benchmark {bench.path.name}: {len(bench.agreement)} agreement positions "
            f"(Stockfish depth {bench.spec.label_depth}), {len(bench.mate_in_one)} mates in one, "
            f"{len(bench.material)} material wins"
        )
        print(
            f"{'player':<12} {'top-1 agreement':>22} {'top-3 agreement':>22} {'mate in one':>22} "
            f"{'material':>22}" + ("  Elo [95% CI] on the ladder" if rungs else "")
        )
    try:
        for name, player in players.items():
            if player == "random":
                rng = np.random.default_rng(args.seed)

                def choose(boards, rng=rng):
                    return [
                        list(b.legal_moves)[int(rng.integers(b.legal_moves.count()))]
                        for b in boards
                    ]

                mover: Any = random_mover(args.seed)
            else:
                choose, mover = choose_fn(player), player
            answers[name] = bench.answers(choose)
            s = bench.score_answers(answers[name])
            row = dict(s)
            line = f"{name:<12} " + " ".join(
                f"{_ci(s[k], s[k + '_lo'], s[k + '_hi']):>22}"
                for k in ("agreement/top1", "agreement/top3", "mate1/success", "material/success")
            )
            if rungs:
                results = ladder_results(mover, rungs, pool, args.games, seed=args.seed)
                elo, lo, hi = elo_estimate(results, bench.ratings)
                row.update(
                    {
                        "ladder": {r: {"score": sc, "games": g} for r, (sc, g) in results.items()},
                        "elo": elo,
                        "elo_lo": lo,
                        "elo_hi": hi,
                    }
                )
                line += (
                    f"  {elo:+.0f} [{lo:+.0f}, {hi:+.0f}]  ("
                    + ", ".join(f"{r} {sc:.2f}" for r, (sc, _) in results.items())
                    + ")"
                )
            out["players"][name] = row
            if not args.json:
                print(line, flush=True)
        if "checkpoint" in answers and "initial" in answers:
            paired = bench.compare(answers["initial"], answers["checkpoint"])
            out["paired"] = {"first": "initial", "second": "checkpoint", **paired}
            if not args.json:
                print(paired_text(paired), flush=True)
    finally:
        if pool is not None:
            pool.close()
    return out


PAIRED_NAMES = {
    "agreement/top1": "top-1",
    "agreement/top3": "top-3",
    "quiet/top1": "quiet top-1",
    "mate1/success": "mate in one",
    "material/success": "material",
}


def paired_text(paired: dict[str, dict[str, float]]) -> str:
    """The checkpoint against its initial policy on the same positions, one line per measure:
    the change with its paired 95% interval and how many positions it gained and lost."""
    top1 = paired["agreement/top1"]
    n = int(top1["both"] + top1["first_only"] + top1["second_only"] + top1["neither"])
    lines = [
        "checkpoint - initial on the same positions (paired 95% CI; positions gained / lost); "
        f"its move changed on {int(top1['changed'])} of {n} agreement positions:"
    ]
    for key, name in PAIRED_NAMES.items():
        p = paired[key]
        lines.append(
            f"  {name:<12} {p['difference']:+.3f} [{p['lo']:+.3f}, {p['hi']:+.3f}]  "
            f"(+{int(p['second_only'])} / -{int(p['first_only'])})"
        )
    return "\n".join(lines)


def check_protocol(
    games: int, opening_plies: int, balance: float, adjudicate: float, max_plies: int
) -> None:
    """One line, named by the eval flag, for a match protocol that cannot be played."""
    if games < 1:
        raise UserError(f"--games {games}: play at least one game")
    if not 0 <= opening_plies <= 200:
        raise UserError(f"--opening-plies {opening_plies}: expected 0..200")
    for flag, value in (("--balance", balance), ("--adjudicate", adjudicate)):
        if not 0.0 < value <= 1.0:
            raise UserError(f"{flag} {value}: expected a value in (0, 1]")
    if max_plies < 1:
        raise UserError(f"--max-plies {max_plies}: expected at least 1")


def _check_flags(args: argparse.Namespace) -> None:
    """Chess's own eval flags, checked before the header is printed."""
    check_protocol(args.games, args.opening_plies, args.balance, args.adjudicate, args.max_plies)
    if args.engines is not None and not 1 <= args.engines <= 64:
        raise UserError(f"--engines {args.engines}: expected 1..64")


def cmd_eval(args: argparse.Namespace) -> int:
    """``chessrl eval`` of a chess checkpoint: the core command's flags and chess's own."""
    if args.opponent:
        raise UserError(
            f"--opponent {args.opponent[0]}: a chess checkpoint plays the Stockfish that --skill, "
            "--depth, --nodes or --elo set (default: its [env] opponent_skill at opponent_depth)"
        )
    if args.overrides:
        raise UserError(
            f"--set {args.overrides[0]}: chess's eval takes its settings from its own flags "
            "(--engines, --max-plies, ...), not --set"
        )
    _check_flags(args)  # before the header is printed
    policy, state, resolved = load_policy(args.checkpoint)
    env = env_options_of(state, args.engines)
    if args.benchmark or args.ladder:
        players = {"checkpoint": policy}
        if args.baselines:
            init = initial_checkpoint(args.checkpoint)
            if init is not None:
                players["initial"] = load_policy(init)[0]
            players["random"] = "random"
        match_only = [
            flag
            for flag, value in (
                ("--pgn", args.pgn),
                ("--skill", args.skill),
                ("--depth", args.depth),
                ("--nodes", args.nodes),
                ("--elo", args.elo),
            )
            if value is not None
        ]
        if match_only:
            raise UserError(
                f"{match_only[0]} is for a match against one Stockfish; --benchmark and --ladder "
                "score against their own positions and rungs (docs/benchmark.md): drop it"
            )
        if args.ladder and (args.games < 2 or args.games % 2):
            raise UserError(
                f"--games {args.games}: the ladder plays each opening with both colours; "
                "use an even number"
            )
        try:
            out = benchmark_report(players, env, args)
        except (MatchError, EngineFailure) as exc:
            print(
                f"chessrl: error: evaluation stopped, {exc} (an engine failure is never scored)",
                file=sys.stderr,
            )
            return 1
        if args.json:
            print(json.dumps({"checkpoint": str(resolved), **out}, indent=2))
        return 0
    opponent = opponent_from_args(args, env)
    players: dict[str, Any] = {"checkpoint": policy}
    names = {
        "checkpoint": f"chessrl {label(resolved, state.get('step'))}",
        "random": f"random mover (seed {args.seed})",
    }
    if args.baselines:
        players["random"] = "random"
        init = initial_checkpoint(args.checkpoint)
        if init is not None:
            players["initial"] = load_policy(init)[0]
            names["initial"] = f"chessrl {label(Path(init))}"
        elif not args.json:
            print(
                "(no initial.pt next to the checkpoint: the initial baseline is skipped)",
                file=sys.stderr,
            )
    print_rows = not args.json
    if print_rows:
        mode = "greedy" if not args.sample else f"sampled at temperature {args.temperature}"
        print(
            f"{resolved} vs {opponent.describe()}: {args.games} games, "
            f"openings of {args.opening_plies} random "
            f"plies (|value| <= {args.balance}, seed {args.seed}) with both colours, "
            "adjudicated after "
            f"{args.max_plies} plies, {mode}"
        )
        print(HEADER)
    try:
        result = evaluate(
            players,
            env,
            opponent,
            games=args.games,
            seed=args.seed,
            opening_plies=args.opening_plies,
            balance=args.balance,
            max_plies=args.max_plies,
            adjudicate=args.adjudicate,
            greedy=not args.sample,
            temperature=args.temperature,
            pgn=args.pgn,
            log=print if print_rows else None,
            names=names,
        )
    except MatchError as exc:
        print(
            f"chessrl: error: evaluation stopped, {exc} (an engine failure is never scored)",
            file=sys.stderr,
        )
        return 1
    except EngineFailure as exc:  # outside a game: while choosing the openings
        print(
            f"chessrl: error: evaluation stopped before any game, choosing the openings: {exc}",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps({"checkpoint": str(resolved), **result.to_json()}, indent=2))
    elif args.pgn:
        print(f"PGN: {args.pgn}")
    return 0
