"""A held-out chess benchmark: Stockfish agreement, two tactics sets and an Elo ladder.

What a built :class:`Benchmark` promises (docs/benchmark.md):

* **Agreement**: ``spec.agreement`` distinct positions (by EPD) from every phase of the game:
  positions sampled along games that start with 6-14 uniformly random plies and continue in
  Stockfish self-play (depth ``spec.selfplay_depth``, a seeded choice among its top 3 moves
  within 150 cp of the best), and random endgames (kings + 1-4 pieces). Each is labelled with
  Stockfish's 3 best moves at ``spec.label_depth`` (multi-PV 3, cleared hash).
* **Mate in one**: ``spec.mate_in_one`` positions where the side to move mates in one, every
  mating move stored (exact, found by python-chess), half from the self-play games where
  there are enough, the rest from uniformly random games.
* **Material**: ``spec.material`` positions whose best move at ``spec.label_depth`` (multi-PV
  2) is a capture or a promotion, at least ``spec.material_gap_cp`` better than the second
  best, neither score a mate, and not a recapture on the square the previous move captured on.
* **Held out**: every draw comes from ``np.random.default_rng([seed, tag])`` with tags no
  training sampler uses, every position is at least 6 plies from the start position (or a
  random endgame), and :meth:`Benchmark.keys` gives the EPDs so a start sampler can exclude them.
* **Deterministic and cached**: the sets are a function of the spec and the Stockfish build
  (fixed-depth searches, one thread, cleared hash). :func:`build` writes one JSON file named
  by a hash of the spec and the engine's version; a second call loads it without starting an
  engine. Ladder games against a ``skill:`` rung are the exception: Stockfish seeds its
  skill weakening from the clock, so those ratings vary from build to build.
* **Scores** (:meth:`Benchmark.score`) are fractions with Wilson 95% intervals; the ladder
  puts its rungs on one Elo scale with the uniformly random mover at 0, and
  :func:`elo_estimate` places a player on it from its scores against rated rungs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import chess
import chess.engine
import numpy as np
import torch

from chessrl.envs.chess import encoding as enc
from chessrl.envs.chess.game import ChessGame, ChessState, repetitions, terminal_reason
from chessrl.envs.chess.starts import (  # noqa: F401
    PIECE_VALUES,
    mating_moves,
    random_endgame,
    random_play,
    random_tempting,
    tempting,
)
from chessrl.envs.chess.stockfish import StockfishPool, check_stockfish
from chessrl.errors import UserError
from chessrl.policy import log_probs
from chessrl.stats import paired_difference, wilson

FORMAT = 1  # bump when the generators or the file layout change: old caches are ignored
MIN_LABEL_DEPTH = 12  # shallower labels are too noisy to call "Stockfish's best move"
MIN_PLIES = 6  # no position closer to the start: training roots often are early openings
OPENING_PLIES = (6, 14)  # inclusive range of random plies before self-play takes over
SELFPLAY_MAX_PLIES = 200  # a self-play game stops here
SELFPLAY_GAMES = 8  # self-play games advanced together (one engine batch per ply)
SELFPLAY_WEIGHTS = (0.6, 0.25, 0.15)  # chance of Stockfish's 1st / 2nd / 3rd move in self-play ...
SELFPLAY_MARGIN_CP = 150  # ... among the moves at most this much worse than the best
SAMPLE_P = 0.1  # chance a self-play position joins the agreement candidates
MATERIAL_P = 0.2  # chance a self-play position with a tempting capture is a material candidate
ENDGAME_FRACTION = 0.15  # share of random endgames in the agreement set
MATE_PER_RANDOM_GAME = 2  # at most this many mate-in-one positions from one random game
MATE_CP = 50_000  # |cp| at or above this is a mate score (pool: +-(100000 - plies))
LADDER_MAX_PLIES = 200  # ladder games still running here are adjudicated
LADDER_OPENING_PLIES = 8  # ladder openings: random plies, kept if balanced within ...
LADDER_BALANCE = 0.15  # ... this value (about 80 cp), as `chessrl eval` does
LADDER_ADJUDICATE = 0.5  # adjudicated win at this value (about 300 cp) at the label depth

# Generator stream tags: one per set, none shared with a training sampler.
_TAG_SELFPLAY, _TAG_ENDGAME, _TAG_ORDER = 0xBE0C01, 0xBE0C02, 0xBE0C03
_TAG_MATES, _TAG_MATERIAL, _TAG_RANDOM_MOVER, _TAG_GREEDY = 0xBE0C04, 0xBE0C05, 0xBE0C06, 0xBE0C07
_TAG_EPSILON = 0xBE0C08


@dataclass(frozen=True)
class BenchmarkSpec:
    """Everything a benchmark is a function of (besides the Stockfish build)."""

    seed: int = 0
    """seed of every generator stream; a different seed gives different positions"""
    agreement: int = 2000
    """positions of the agreement set"""
    label_depth: int = 12
    """Stockfish depth of the labels (>= 12 unless ``allow_shallow``)"""
    mate_in_one: int = 300
    """positions of the mate-in-one set"""
    material: int = 300
    """positions of the material set"""
    material_gap_cp: int = 200
    """how much better than the second best a material position's best move must be (cp)"""
    engines: int = 2
    """Stockfish processes used while building (does not change the result)"""
    hash_mb: int = 16
    """hash table of each Stockfish process, MiB"""
    stockfish_path: str = "/usr/games/stockfish"
    """the Stockfish executable (its version, not its path, names the cache)"""
    selfplay_depth: int = 5
    """Stockfish depth of the self-play moves that lead to the agreement positions"""
    ladder: tuple[str, ...] = (
        "random",
        "eps0.9:material_greedy",
        "eps0.7:material_greedy",
        "eps0.5:material_greedy",
        "material_greedy",
        "eps0.25:skill:0",
        "eps0.1:skill:0",
        "skill:0",
        "nodes:1",
    )
    """ladder rungs, weakest first (see :func:`rung_opponent`); neighbours ~70-90% apart"""
    ladder_games: int = 100
    """games per adjacent pair of rungs (even: each opening with both colours)"""
    allow_shallow: bool = False
    """permit label_depth < 12 (tests only: shallow labels are not a benchmark)"""

    def __post_init__(self) -> None:
        if self.label_depth < MIN_LABEL_DEPTH and not self.allow_shallow:
            raise ValueError(
                f"label_depth {self.label_depth} < {MIN_LABEL_DEPTH}: shallow labels are noise; "
                "set allow_shallow=True only in tests"
            )
        if min(self.agreement, self.mate_in_one, self.material) < 1 or self.ladder_games < 0:
            raise ValueError("every set needs at least one position and ladder_games must be >= 0")
        for name in self.ladder:
            _parse_rung(name)
        if self.ladder and self.ladder[0] != "random":
            raise ValueError(
                f"the ladder's first rung must be 'random' (the Elo anchor); got {self.ladder}"
            )

    def key(self) -> dict[str, Any]:
        """The fields the content depends on (not the path, engine count or shallow permit)."""
        d = dataclasses.asdict(self)
        for name in ("stockfish_path", "engines", "allow_shallow"):
            d.pop(name)
        d["ladder"] = list(self.ladder)
        return d

    def digest(self) -> str:
        text = json.dumps({"format": FORMAT, **self.key()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


# --- positions -----------------------------------------------------------------------------


def material_gain(board: chess.Board, move: chess.Move) -> int:
    """How much ``move`` changes the mover's material balance (P 1, N/B 3, R 5, Q 9), on the
    spot."""
    gain = 0
    if board.is_en_passant(move):
        gain = 1
    elif board.is_capture(move):
        captured = board.piece_type_at(move.to_square)
        gain = PIECE_VALUES[captured] if captured is not None else 0
    if move.promotion:
        gain += PIECE_VALUES[move.promotion] - 1
    return gain


def _over(board: chess.Board) -> bool:
    """Whether the game is over by the training env's rules (repetition and fifty moves
    included)."""
    return bool(terminal_reason(board, any(board.generate_legal_moves()), repetitions(board)))


def _recapture_square(board: chess.Board) -> int | None:
    """The square the previous move captured on, or None."""
    if not board.move_stack:
        return None
    last = board.pop()
    captured = board.is_capture(last)
    board.push(last)
    return last.to_square if captured else None


@dataclass
class _Candidate:
    board: chess.Board  # without history unless needed for the recapture test
    source: str  # "selfplay" | "endgame" | "random"
    ply: int | None = None
    recapture: int | None = None


def _selfplay(
    pool: StockfishPool, rng: np.random.Generator, want: int, depth: int, log: Callable[[str], None]
) -> tuple[list[_Candidate], list[_Candidate], list[_Candidate]]:
    """Self-play games until ``want`` distinct agreement candidates; also returns the games'
    mate-in-one positions and material candidates, all in a deterministic order."""
    agree: list[_Candidate] = []
    mates: list[_Candidate] = []
    material: list[_Candidate] = []
    seen: set[str] = set()
    seen_mates: set[str] = set()
    limit = chess.engine.Limit(depth=depth)
    games = 0
    while len(agree) < want:
        boards = []
        while len(boards) < SELFPLAY_GAMES:
            board = chess.Board()
            if random_play(board, int(rng.integers(OPENING_PLIES[0], OPENING_PLIES[1] + 1)), rng):
                boards.append(board)
        live = list(boards)
        while live:
            playing = []
            for board in live:
                if _over(board) or board.ply() >= SELFPLAY_MAX_PLIES:
                    continue
                playing.append(board)
                epd = board.epd()
                if board.legal_moves.count() >= 3 and rng.random() < SAMPLE_P and epd not in seen:
                    seen.add(epd)
                    agree.append(_Candidate(board.copy(stack=False), "selfplay", board.ply()))
                if epd not in seen_mates and board.legal_moves.count() >= 2 and mating_moves(board):
                    seen_mates.add(epd)
                    mates.append(_Candidate(board.copy(stack=False), "selfplay", board.ply()))
                elif rng.random() < MATERIAL_P and tempting(board):
                    material.append(
                        _Candidate(
                            board.copy(stack=False),
                            "selfplay",
                            board.ply(),
                            _recapture_square(board),
                        )
                    )
            live = playing
            if not live:
                break
            for board, lines in zip(live, pool.analyse_multipv(live, limit, 3)):
                best_cp = lines[0][1]
                near = [m for m, cp in lines if cp >= best_cp - SELFPLAY_MARGIN_CP]
                w = np.asarray(SELFPLAY_WEIGHTS[: len(near)])
                board.push(near[int(rng.choice(len(near), p=w / w.sum()))])
        games += len(boards)
        log(
            f"benchmark: self-play {games} games, "
            f"{min(len(agree), want)}/{want} agreement positions"
        )
    return agree[:want], mates, material


def _endgames(rng: np.random.Generator, want: int) -> list[_Candidate]:
    out: list[_Candidate] = []
    seen: set[str] = set()
    while len(out) < want:
        board = random_endgame(rng)
        if board.legal_moves.count() >= 3 and board.epd() not in seen:
            seen.add(board.epd())
            out.append(_Candidate(board, "endgame"))
    return out


def _random_mates(rng: np.random.Generator, want: int, seen: set[str]) -> list[_Candidate]:
    """Mate-in-one positions from uniformly random games, at most a few per game."""
    out: list[_Candidate] = []
    while len(out) < want:
        board = chess.Board()
        taken = 0
        while (
            taken < MATE_PER_RANDOM_GAME
            and len(out) < want
            and board.ply() < SELFPLAY_MAX_PLIES
            and not _over(board)
        ):
            if (
                board.ply() >= MIN_PLIES
                and board.legal_moves.count() >= 2
                and board.epd() not in seen
                and rng.random() < 0.5
                and mating_moves(board)
            ):
                seen.add(board.epd())
                out.append(_Candidate(board.copy(stack=False), "random", board.ply()))
                taken += 1
            moves = list(board.legal_moves)
            board.push(moves[int(rng.integers(len(moves)))])
    return out


def _random_material(rng: np.random.Generator) -> Iterator[_Candidate]:
    """An endless stream of random middlegames (20-40 random plies) with a tempting capture."""
    while True:
        board = random_tempting(rng)
        yield _Candidate(board.copy(stack=False), "random", board.ply(), _recapture_square(board))


# --- labelling -----------------------------------------------------------------------------


def _label_agreement(
    pool: StockfishPool,
    cands: list[_Candidate],
    want: int,
    depth: int,
    log: Callable[[str], None],
    chunk: int = 100,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    limit = chess.engine.Limit(depth=depth)
    i = 0
    while len(out) < want:
        if i >= len(cands):
            raise RuntimeError(f"only {len(out)} of {want} agreement positions could be labelled")
        batch = cands[i : i + min(chunk, want - len(out))]
        i += len(batch)
        for cand, lines in zip(batch, pool.analyse_multipv([c.board for c in batch], limit, 3)):
            moves = [m for m, _ in lines]
            if (
                len(lines) < 3
                or len(set(moves)) < 3
                or not all(cand.board.is_legal(m) for m in moves)
            ):
                continue  # a search that did not give three distinct lines is no label
            out.append(
                {
                    "fen": cand.board.fen(),
                    "best": moves[0].uci(),
                    "top3": [m.uci() for m in moves[:3]],
                    "cp": [int(cp) for _, cp in lines[:3]],
                    "source": cand.source,
                    "ply": cand.ply,
                }
            )
        log(f"benchmark: agreement labels {len(out)}/{want}")
    return out[:want]


def _label_material(
    pool: StockfishPool,
    cands: Iterator[_Candidate],
    want: int,
    depth: int,
    gap_cp: int,
    log: Callable[[str], None],
    chunk: int = 100,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    limit = chess.engine.Limit(depth=depth)
    tried = 0
    while len(out) < want:
        batch: list[_Candidate] = []
        while len(batch) < min(chunk, max(16, 3 * (want - len(out)))):
            cand = next(cands)
            if cand.board.epd() not in seen:
                seen.add(cand.board.epd())
                batch.append(cand)
        tried += len(batch)
        for cand, lines in zip(batch, pool.analyse_multipv([c.board for c in batch], limit, 2)):
            if len(out) >= want or len(lines) < 2:
                continue
            (best, cp1), (_, cp2) = lines[0], lines[1]
            if abs(cp1) >= MATE_CP or abs(cp2) >= MATE_CP or cp1 - cp2 < gap_cp:
                continue
            gain = material_gain(cand.board, best)
            if gain <= 0 or best.to_square == cand.recapture:
                continue
            out.append(
                {
                    "fen": cand.board.fen(),
                    "best": best.uci(),
                    "gap_cp": int(cp1 - cp2),
                    "gain": gain,
                    "source": cand.source,
                    "ply": cand.ply,
                }
            )
        log(f"benchmark: material positions {len(out)}/{want} ({tried} candidates labelled)")
    return out


def _interleave(a: list[_Candidate], b: Iterator[_Candidate]) -> Iterator[_Candidate]:
    """a[0], b, a[1], b, ...; b alone once a is exhausted."""
    for cand in a:
        yield cand
        yield next(b)
    yield from b


# --- the benchmark -------------------------------------------------------------------------

Choose = Callable[[list[chess.Board]], list[chess.Move]]


@dataclass
class Benchmark:
    """The labelled sets and the ladder ratings; built and cached by :func:`build`."""

    spec: BenchmarkSpec
    engine: str  # the labelling engine's UCI name, e.g. "Stockfish 15.1"
    agreement: list[dict[str, Any]]  # fen, best, top3, cp, source, ply
    mate_in_one: list[dict[str, Any]]  # fen, mates, source, ply
    material: list[dict[str, Any]]  # fen, best, gap_cp, gain, source, ply
    ladder: dict[str, Any] = field(
        default_factory=dict
    )  # games_per_pair, rungs [{name, elo, lo, hi, ...}]
    path: Path | None = None  # the cache file it was loaded from or written to

    def keys(self) -> set[str]:
        """The EPD (position without move counters) of every benchmark position."""
        return {
            chess.Board(r["fen"]).epd()
            for rows in (self.agreement, self.mate_in_one, self.material)
            for r in rows
        }

    @property
    def ratings(self) -> dict[str, float]:
        """Each ladder rung's Elo, the random mover at 0."""
        return {r["name"]: float(r["elo"]) for r in self.ladder.get("rungs", [])}

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "digest": self.spec.digest(),
            "spec": self.spec.key(),
            "engine": self.engine,
            "agreement": self.agreement,
            "mate_in_one": self.mate_in_one,
            "material": self.material,
            "ladder": self.ladder,
        }

    def answers(self, choose: Choose) -> dict[str, list[str]]:
        """``choose``'s move (UCI) on every position of each set: ``agreement``,
        ``mate_in_one`` and ``material``, in the sets' order.

        ``choose`` gets the boards of one set (from the stored FENs, so no move history) and
        returns one move per board; a missing or illegal move is a :class:`ValueError`.
        """

        def one(rows: list[dict[str, Any]]) -> list[str]:
            boards = [chess.Board(r["fen"]) for r in rows]
            moves = list(choose([b.copy() for b in boards]))
            if len(moves) != len(boards):
                raise ValueError(
                    f"the chooser answered {len(moves)} moves for {len(boards)} boards"
                )
            for board, move in zip(boards, moves):
                if not isinstance(move, chess.Move) or not board.is_legal(move):
                    raise ValueError(
                        f"the chooser played {move} in {board.fen()}: not a legal move"
                    )
            return [m.uci() for m in moves]

        return {
            "agreement": one(self.agreement),
            "mate_in_one": one(self.mate_in_one),
            "material": one(self.material),
        }

    def hits(self, answers: dict[str, list[str]]) -> dict[str, list[bool]]:
        """Per position, whether :meth:`answers`' move scores, for each measure:
        ``agreement/top1``, ``agreement/top3``, ``quiet/top1`` (the agreement positions whose
        best move is quiet), ``mate1/success`` and ``material/success``."""
        agree = answers["agreement"]
        return {
            "agreement/top1": [m == r["best"] for m, r in zip(agree, self.agreement)],
            "agreement/top3": [m in r["top3"] for m, r in zip(agree, self.agreement)],
            "quiet/top1": [
                m == r["best"] for m, r in zip(agree, self.agreement) if _quiet(r["fen"], r["best"])
            ],
            "mate1/success": [
                m in r["mates"] for m, r in zip(answers["mate_in_one"], self.mate_in_one)
            ],
            "material/success": [
                m == r["best"] for m, r in zip(answers["material"], self.material)
            ],
        }

    def score(self, choose: Choose) -> dict[str, float]:
        """Agreement top-1/top-3 (and top-1 on the positions whose best move is quiet:
        ``quiet/top1``: a policy that only takes what hangs scores near chance there, whatever
        its top-1 overall), mate-in-one and material success of ``choose``'s moves
        (:meth:`answers`), each a fraction with its Wilson 95% interval (``_lo``, ``_hi``) and
        the set size (``agreement/n``, ``quiet/n``, ``mate1/n``, ``material/n``)."""
        return self.score_answers(self.answers(choose))

    def score_answers(self, answers: dict[str, list[str]]) -> dict[str, float]:
        """:meth:`score` of moves already chosen (:meth:`answers`)."""
        out: dict[str, float] = {}
        for name, hit in self.hits(answers).items():
            n = len(hit)
            lo, hi = wilson(sum(hit), n)
            out[name] = sum(hit) / n if n else 0.0
            out[f"{name}_lo"], out[f"{name}_hi"] = lo, hi
            out[f"{name.split('/')[0]}/n"] = n  # top-1 and top-3 share agreement/n
        return out

    def compare(
        self, first: dict[str, list[str]], second: dict[str, list[str]]
    ) -> dict[str, dict[str, float]]:
        """Two players' :meth:`answers` on the same positions (a checkpoint against its start),
        per measure: the paired table (``both``, ``first_only``, ``second_only``, ``neither``),
        ``changed`` (positions where the agreement move differs) and ``second - first`` with
        its paired 95% interval (:func:`chessrl.stats.paired_difference`: the positions are
        the same, so the interval is much narrower than two independent ones)."""
        a, b = self.hits(first), self.hits(second)
        out: dict[str, dict[str, float]] = {}
        for name in a:
            pairs = list(zip(a[name], b[name]))
            both = sum(x and y for x, y in pairs)
            first_only = sum(x and not y for x, y in pairs)
            second_only = sum(y and not x for x, y in pairs)
            neither = len(pairs) - both - first_only - second_only
            d, lo, hi = paired_difference(both, first_only, second_only, neither)
            out[name] = {
                "both": both,
                "first_only": first_only,
                "second_only": second_only,
                "neither": neither,
                "difference": d,
                "lo": lo,
                "hi": hi,
            }
        changed = sum(x != y for x, y in zip(first["agreement"], second["agreement"]))
        out["agreement/top1"]["changed"] = changed
        return out


def _quiet(fen: str, uci: str) -> bool:
    """Whether ``uci`` is neither a capture nor a promotion on the board ``fen``."""
    board, move = chess.Board(fen), chess.Move.from_uci(uci)
    return not board.is_capture(move) and move.promotion is None


# --- building and the cache ----------------------------------------------------------------

_ENGINES_FILE = (
    "engines.json"  # executable identity (path, size, mtime) -> UCI name, so a load runs nothing
)


def _identity(path: str) -> str:
    real = os.path.realpath(path)
    st = os.stat(real)
    return f"{real}:{st.st_size}:{st.st_mtime_ns}"


def engine_version(path: str, cache_dir: str | Path | None = None) -> str:
    """The UCI name of the engine at ``path`` (e.g. "Stockfish 15.1"); :class:`UserError` if
    missing.

    With ``cache_dir`` the answer is remembered per executable (path, size, modification
    time) in ``engines.json`` there, so asking again starts no process.
    """
    exe = check_stockfish(path)
    ident = _identity(exe)
    known: dict[str, str] = {}
    file = Path(cache_dir) / _ENGINES_FILE if cache_dir is not None else None
    if file is not None and file.exists():
        try:
            known = dict(json.loads(file.read_text()))
        except (OSError, ValueError, TypeError):
            known = {}  # unreadable: ask the engine again and rewrite it
        if ident in known:
            return known[ident]
    try:
        proc = subprocess.run(
            [exe], input="uci\nquit\n", capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"could not ask {exe} for its version: {exc}") from None
    found = re.search(r"^id name (.+)$", proc.stdout, re.MULTILINE)
    if found is None:
        raise UserError(f"{exe} did not name itself over UCI (no 'id name' line)")
    version = found.group(1).strip()
    if file is not None:
        _write_atomic(file, json.dumps({**known, ident: version}, indent=1, sort_keys=True))
    return version


def cache_path(spec: BenchmarkSpec, cache_dir: str | Path, engine: str) -> Path:
    """``cache_dir/benchmark-<spec digest>-<engine slug>.json``."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", engine).strip("-").lower()
    return Path(cache_dir) / f"benchmark-{spec.digest()}-{slug}.json"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load(path: Path, spec: BenchmarkSpec) -> Benchmark | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (
        data.get("format") != FORMAT
        or data.get("digest") != spec.digest()
        or data.get("spec") != spec.key()
    ):
        return None
    return Benchmark(
        spec,
        data["engine"],
        data["agreement"],
        data["mate_in_one"],
        data["material"],
        data.get("ladder", {}),
        path,
    )


def build(
    spec: BenchmarkSpec, cache_dir: str | Path, log: Callable[[str], None] = print
) -> Benchmark:
    """The benchmark of ``spec``: loaded from ``cache_dir`` if built before with this engine,
    else generated, labelled (minutes at the default size), ladder-rated and cached.

    If the engine at ``spec.stockfish_path`` is missing, a cached benchmark of this spec is
    loaded whichever engine labelled it (the file names it); with none, or several, the
    missing engine is a :class:`UserError`.
    """
    cache_dir = Path(cache_dir)
    try:
        engine = engine_version(spec.stockfish_path, cache_dir)
    except UserError:
        found = sorted(cache_dir.glob(f"benchmark-{spec.digest()}-*.json"))
        if len(found) != 1:
            raise
        bench = _load(found[0], spec)
        if bench is None:
            raise
        log(
            f"benchmark: {spec.stockfish_path} not found; loaded {found[0]} "
            f"(labelled by {bench.engine})"
        )
        return bench
    path = cache_path(spec, cache_dir, engine)
    if path.exists():
        bench = _load(path, spec)
        if bench is not None:
            log(f"benchmark: loaded {path}")
            return bench
        log(f"benchmark: {path} is unreadable or from another format; rebuilding")
    log(
        f"benchmark: building {path.name} with {spec.engines} Stockfish engine(s), "
        "once for this engine: "
        f"self-play, then labels at depth {spec.label_depth} for {spec.agreement} agreement, "
        f"{spec.mate_in_one} "
        f"mate-in-one and {spec.material} material positions"
        + (f", then {spec.ladder_games} games per ladder pair" if spec.ladder else "")
        + " (minutes at the default size; a line per batch)"
    )
    pool = StockfishPool(
        spec.stockfish_path, spec.engines, spec.hash_mb, depth=spec.label_depth, cache_size=0
    )
    try:
        bench = _generate(spec, engine, pool, log)
    finally:
        pool.close()
    _write_atomic(path, json.dumps(bench.to_json(), indent=1, sort_keys=True))
    bench.path = path
    log(f"benchmark: wrote {path}")
    return bench


SHIPPED = (
    Path(__file__).resolve().parent / "data"
)  # the default benchmark (seed 0), built once and committed


def user_cache() -> Path:
    """Where benchmarks that are not shipped are built: ``$CHESSRL_CACHE/benchmark``, default
    ``~/.cache/chessrl/benchmark``."""
    root = os.environ.get("CHESSRL_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "chessrl"
    )
    return Path(root) / "benchmark"


def load_default(spec: BenchmarkSpec, log: Callable[[str], None] | None = None) -> Benchmark:
    """The benchmark of ``spec`` from the shipped copy when there is one for this engine, else
    from (or built into) :func:`user_cache`; build progress goes to ``log`` (stderr by default)."""
    from chessrl.progress import echo

    say = log or echo  # stderr, above a run's progress bar
    cache = user_cache()
    try:
        engine = engine_version(spec.stockfish_path, cache)
    except (UserError, OSError):
        engine = None
    if engine is not None:
        shipped = cache_path(spec, SHIPPED, engine)
        if shipped.exists():
            bench = _load(shipped, spec)
            if bench is not None:
                return bench
    return build(spec, cache, log=say)


def _generate(
    spec: BenchmarkSpec, engine: str, pool: StockfishPool, log: Callable[[str], None]
) -> Benchmark:
    n_end = max(1, round(ENDGAME_FRACTION * spec.agreement)) if spec.agreement > 1 else 0
    surplus = 2 + spec.agreement // 50  # a search may (rarely) give fewer than three lines
    rng = np.random.default_rng([spec.seed, _TAG_SELFPLAY])
    sp, sp_mates, sp_material = _selfplay(
        pool, rng, spec.agreement - n_end + surplus, spec.selfplay_depth, log
    )
    ends = _endgames(np.random.default_rng([spec.seed, _TAG_ENDGAME]), n_end + surplus)
    ends = [c for c in ends if c.board.epd() not in {s.board.epd() for s in sp}]
    cands = sp + ends
    order = np.random.default_rng([spec.seed, _TAG_ORDER]).permutation(len(cands))
    agreement = _label_agreement(
        pool, [cands[i] for i in order], spec.agreement, spec.label_depth, log
    )

    rng = np.random.default_rng([spec.seed, _TAG_MATES])
    engine_mates = [sp_mates[i] for i in rng.permutation(len(sp_mates))][: spec.mate_in_one // 2]
    seen = {c.board.epd() for c in engine_mates}
    mates = engine_mates + _random_mates(rng, spec.mate_in_one - len(engine_mates), seen)
    mate_rows = [
        {
            "fen": c.board.fen(),
            "mates": [m.uci() for m in mating_moves(c.board)],
            "source": c.source,
            "ply": c.ply,
        }
        for c in mates
    ]
    log(
        f"benchmark: mate-in-one positions {len(mate_rows)}/{spec.mate_in_one} "
        f"({len(engine_mates)} from self-play)"
    )

    rng = np.random.default_rng([spec.seed, _TAG_MATERIAL])
    sp_material = [sp_material[i] for i in rng.permutation(len(sp_material))]
    material = _label_material(
        pool,
        _interleave(sp_material, _random_material(rng)),
        spec.material,
        spec.label_depth,
        spec.material_gap_cp,
        log,
    )

    ladder = (
        ladder_ratings(spec.ladder, pool, spec.ladder_games, spec.seed, log) if spec.ladder else {}
    )
    return Benchmark(spec, engine, agreement, mate_rows, material, ladder)


# --- a policy as a chooser -----------------------------------------------------------------


def choose_fn(
    policy: torch.nn.Module, device: str | torch.device = "cpu", batch_size: int = 512
) -> Choose:
    """The policy's greedy (most likely legal) move in each board, batched, in eval mode
    without gradients; the policy's train/eval mode is restored afterwards."""
    game = ChessGame(reward="none", features=enc.features_of(policy))

    def choose(boards: list[chess.Board]) -> list[chess.Move]:
        was_training = policy.training
        policy.eval()
        moves: list[chess.Move] = []
        try:
            with torch.no_grad():
                for i in range(0, len(boards), batch_size):
                    chunk = boards[i : i + batch_size]
                    obs = game.observe([ChessState(b) for b in chunk])
                    lp = log_probs(
                        policy,
                        torch.as_tensor(obs.tokens, device=device),
                        torch.as_tensor(obs.action_mask, device=device),
                        1.0,
                    )
                    moves.extend(
                        enc.action_to_move(int(a), b.turn)
                        for a, b in zip(lp.argmax(-1).tolist(), chunk)
                    )
        finally:
            policy.train(was_training)
        return moves

    return choose


# --- ladder opponents ----------------------------------------------------------------------

Opponent = Callable[[Sequence[ChessState]], np.ndarray]


def _board_of(state: ChessState | chess.Board) -> chess.Board:
    return state.board if isinstance(state, ChessState) else state


def _per_board(pick: Callable[[chess.Board], chess.Move]) -> Opponent:
    """An opponent from a one-board move picker: action indices, 0 for finished boards."""

    def play(states: Sequence[ChessState]) -> np.ndarray:
        out = np.zeros(len(states), dtype=np.int64)
        for i, st in enumerate(states):
            board = _board_of(st)
            if not _over(board):
                out[i] = enc.move_to_action(pick(board), board.turn)
        return out

    return play


def random_mover(seed: int) -> Opponent:
    """A uniformly random legal move, from its own seeded generator."""
    rng = np.random.default_rng([seed, _TAG_RANDOM_MOVER])

    def pick(board: chess.Board) -> chess.Move:
        moves = list(board.legal_moves)
        return moves[int(rng.integers(len(moves)))]

    return _per_board(pick)


def greedy_move(board: chess.Board, rng: np.random.Generator) -> chess.Move:
    """A mate in one if there is one, else a move that gains the most material on the spot
    (:func:`material_gain`); ties broken by ``rng``."""
    moves = mating_moves(board)
    if not moves:
        legal = list(board.legal_moves)
        gains = [material_gain(board, m) for m in legal]
        best = max(gains)
        moves = [m for m, g in zip(legal, gains) if g == best]
    return moves[int(rng.integers(len(moves)))]


def material_greedy(seed: int) -> Opponent:
    """One ply of greed: a mating move first, else the most material won, ties at random
    (seeded)."""
    rng = np.random.default_rng([seed, _TAG_GREEDY])
    return _per_board(lambda board: greedy_move(board, rng))


def _engine_opponent(
    pool: StockfishPool, limit: chess.engine.Limit, options: dict[str, Any]
) -> Opponent:
    def play(states: Sequence[ChessState]) -> np.ndarray:
        out = np.zeros(len(states), dtype=np.int64)
        boards = [_board_of(s) for s in states]
        live = [i for i, b in enumerate(boards) if not _over(b)]
        if live:
            for i, move in zip(live, pool.play_moves([boards[i] for i in live], limit, options)):
                out[i] = enc.move_to_action(move, boards[i].turn)
        return out

    return play


def stockfish_nodes(pool: StockfishPool, nodes: int = 1) -> Opponent:
    """Full-strength Stockfish limited to ``nodes`` nodes (deterministic: cleared hash, one
    thread)."""
    return _engine_opponent(pool, chess.engine.Limit(nodes=nodes), {})


def stockfish_skill(pool: StockfishPool, skill: int = 0, depth: int | None = None) -> Opponent:
    """Stockfish at ``Skill Level`` ``skill``, searching to ``depth`` (default min(skill + 1, 12):
    Stockfish picks its weakened move at depth 1 + skill and ignores deeper iterations).
    Its weakening is seeded from the clock, so games against it do not repeat exactly."""
    depth = depth if depth is not None else min(skill + 1, 12)
    return _engine_opponent(
        pool, chess.engine.Limit(depth=depth), {} if skill >= 20 else {"Skill Level": skill}
    )


def stockfish_depth(pool: StockfishPool, depth: int) -> Opponent:
    """Full-strength Stockfish limited to ``depth`` (deterministic)."""
    return _engine_opponent(pool, chess.engine.Limit(depth=depth), {})


def epsilon_random(base: Opponent, p: float, seed: int) -> Opponent:
    """``base``, except that with probability ``p`` (seeded) a state gets a uniformly random
    legal move."""
    rng = np.random.default_rng([seed, _TAG_EPSILON])
    rand = random_mover(seed + 7)

    def play(states: Sequence[ChessState]) -> np.ndarray:
        coin = rng.random(len(states)) < p
        out = np.zeros(len(states), dtype=np.int64)
        for mask, who in ((coin, rand), (~coin, base)):
            rows = np.flatnonzero(mask)
            if len(rows):
                out[rows] = who([states[i] for i in rows])
        return out

    return play


_RUNG = re.compile(
    r"^(?:eps(?P<eps>0?\.\d+):)?"
    r"(?:(?P<plain>random|material_greedy)|(?P<kind>skill|nodes|depth):(?P<value>\d+))$"
)


def _parse_rung(name: str) -> tuple[float, str, int]:
    """(random-move probability, kind, value) of a rung name."""
    m = _RUNG.match(name)
    if m is None:
        raise ValueError(
            f"unknown ladder rung {name!r}: expected random, material_greedy, skill:S, nodes:N "
            "or depth:D, optionally prefixed by epsP: (a random move with probability P, "
            "e.g. eps0.5:skill:0)"
        )
    eps = float(m["eps"]) if m["eps"] else 0.0
    return (eps, m["plain"], 0) if m["plain"] else (eps, m["kind"], int(m["value"]))


def rung_opponent(name: str, pool: StockfishPool | None, seed: int = 0) -> Opponent:
    """The opponent a rung name stands for (``pool`` is needed by the Stockfish rungs):
    ``random``, ``material_greedy``, ``skill:S``, ``nodes:N``, ``depth:D``, and any of them
    prefixed by ``epsP:`` (a uniformly random move with probability P instead)."""
    eps, kind, value = _parse_rung(name)
    if kind == "random":
        base = random_mover(seed)
    elif kind == "material_greedy":
        base = material_greedy(seed)
    elif pool is None:
        raise ValueError(f"rung {name!r} needs a Stockfish pool")
    elif kind == "skill":
        base = stockfish_skill(pool, value)
    elif kind == "nodes":
        base = stockfish_nodes(pool, value)
    else:
        base = stockfish_depth(pool, value)
    return epsilon_random(base, eps, seed) if eps > 0 else base


# --- one Elo scale -------------------------------------------------------------------------


def elo_estimate(
    results: dict[str, tuple[float, int]],
    ratings: dict[str, float],
    z: float = 1.96,
    prior_games: float = 1.0,
) -> tuple[float, float, float]:
    """(elo, lo, hi): the maximum-likelihood Elo of a player from ``results`` (opponent name ->
    (score as a fraction, games)) against opponents rated in ``ratings``, with a
    likelihood-ratio interval (``z`` = 1.96: 95%).

    The model: each game against opponent j scores with expectation
    ``1 / (1 + 10^((r_j - R) / 400))``; a draw counts half. ``prior_games`` virtual games
    scoring 1/2, spread over the opponents in proportion to the games played, keep the
    estimate finite at a 0% or 100% score: there the estimate and the far end of the interval
    rest on that prior, and only the near end (``hi`` at 0%, ``lo`` at 100%) is a real bound.
    The opponents' ratings are taken as exact.
    """
    rows = [(ratings[name], float(s), int(n)) for name, (s, n) in results.items() if n > 0]
    if not rows:
        raise ValueError("no games to rate")
    r = np.array([x[0] for x in rows], dtype=np.float64)
    n = np.array([x[2] for x in rows], dtype=np.float64)
    s = np.clip(np.array([x[1] for x in rows], dtype=np.float64), 0.0, 1.0)
    w = prior_games * n / n.sum()
    wins, total = s * n + 0.5 * w, n + w

    def loglik(rating: float) -> float:
        x = (r - rating) * math.log(10.0) / 400.0  # log-odds against the player
        return float(-(wins * np.logaddexp(0.0, x) + (total - wins) * np.logaddexp(0.0, -x)).sum())

    def slope(rating: float) -> float:
        p = 1.0 / (1.0 + np.power(10.0, (r - rating) / 400.0))
        return float((wins - total * p).sum())

    lo, hi = float(r.min()) - 4000.0, float(r.max()) + 4000.0
    best = _bisect(slope, lo, hi, decreasing=True)
    top = loglik(best)
    drop = lambda rating: top - loglik(rating) - z * z / 2.0  # noqa: E731 - crosses 0 at the interval's ends
    return best, _bisect(drop, lo, best, decreasing=True), _bisect(drop, best, hi, decreasing=False)


def _bisect(f: Callable[[float], float], lo: float, hi: float, decreasing: bool) -> float:
    """The zero of a monotone ``f`` on [lo, hi] (an end if it has none there), to 1e-6."""
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if (f(mid) > 0) == decreasing:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-6:
            break
    return 0.5 * (lo + hi)


def _match(
    player: Any,
    opponent: Opponent,
    pool: StockfishPool,
    games: int,
    seed: int,
    starts: list[ChessState],
):
    from chessrl.match import play_match

    game = ChessGame(reward="none", max_plies=LADDER_MAX_PLIES, features=enc.features_of(player))
    return play_match(
        game,
        player,
        opponent,
        games=games,
        seed=seed,
        starts=starts,
        adjudicate=LADDER_ADJUDICATE,
        adjudicator=lambda states: pool.values([s.board for s in states]),
    )


def _openings(pool: StockfishPool, games: int, seed: int) -> list[ChessState]:
    from chessrl.envs.chess.evaluate import balanced_openings

    boards = balanced_openings((games + 1) // 2, LADDER_OPENING_PLIES, seed, pool, LADDER_BALANCE)
    return [ChessState(b) for b in boards]


def ladder_ratings(
    rungs: Sequence[str],
    pool: StockfishPool,
    games: int,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Rate ``rungs`` (weakest first, the first is the anchor at 0) by ``games`` games between
    each adjacent pair: each rung's Elo is the one below it plus the pair's
    :func:`elo_estimate`. Games start from seeded balanced openings, each opening once with
    each colour, and are adjudicated at the pool's depth after ``LADDER_MAX_PLIES`` plies.
    ``lo``/``hi`` add the pairs' interval half-widths in quadrature down to the anchor."""
    out: dict[str, Any] = {
        "games_per_pair": games,
        "max_plies": LADDER_MAX_PLIES,
        "rungs": [{"name": rungs[0], "elo": 0.0, "lo": 0.0, "hi": 0.0}],
    }
    if len(rungs) < 2 or games < 1:
        return out
    starts = _openings(pool, games, seed)
    elo, var = 0.0, 0.0
    for below, above in zip(rungs, rungs[1:]):
        res = _match(
            rung_opponent(above, pool, seed),
            rung_opponent(below, pool, seed + 1),
            pool,
            games,
            seed,
            starts,
        )
        diff, lo, hi = elo_estimate({below: (res.score, res.games)}, {below: 0.0})
        elo += diff
        var += ((hi - lo) / (2 * 1.96)) ** 2
        half = 1.96 * math.sqrt(var)
        out["rungs"].append(
            {
                "name": above,
                "elo": round(elo, 1),
                "lo": round(elo - half, 1),
                "hi": round(elo + half, 1),
                "vs": below,
                "score": res.score,
                "games": res.games,
                "wins": res.wins,
                "draws": res.draws,
                "losses": res.losses,
                "extreme": res.score in (0.0, 1.0),
            }
        )
        log(
            f"benchmark: ladder {above} vs {below}: score {res.score:.3f} over {res.games} games "
            f"(+{res.wins} ={res.draws} -{res.losses}) -> Elo {elo:+.0f}"
        )
    return out


def ladder_results(
    player: Any, rungs: Sequence[str], pool: StockfishPool, games: int, seed: int = 0
) -> dict[str, tuple[float, int]]:
    """``player`` (a Policy, played greedily, or a states->actions callable) against every rung
    under the ladder's protocol: rung name -> (score, games), ready for :func:`elo_estimate`."""
    starts = _openings(pool, games, seed)
    out = {}
    for name in rungs:
        res = _match(player, rung_opponent(name, pool, seed + 1), pool, games, seed, starts)
        out[name] = (res.score, res.games)
    return out


__all__ = [
    "Benchmark",
    "BenchmarkSpec",
    "build",
    "cache_path",
    "choose_fn",
    "elo_estimate",
    "engine_version",
    "epsilon_random",
    "greedy_move",
    "ladder_ratings",
    "ladder_results",
    "material_gain",
    "material_greedy",
    "mating_moves",
    "random_mover",
    "rung_opponent",
    "stockfish_depth",
    "stockfish_nodes",
    "stockfish_skill",
]
