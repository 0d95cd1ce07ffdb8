"""Connect Four (6 rows x 7 columns) on bitboards, scored by a depth-limited alpha-beta solver.

Representation (the classic two-integer bitboard): column ``c`` owns bits ``7*c .. 7*c+6``;
bit ``7*c + r`` is row ``r`` counted from the bottom, and the 7th bit of each column is a
always-empty sentinel that stops line patterns from wrapping into the next column. A state
is ``C4State(cur, mask)``: ``mask`` has a bit per stone, ``cur`` the stones of the side to
move. States are immutable named tuples, so copying is free. Actions are columns 0..6.

Reward engine (``values``): negamax with alpha-beta pruning, a transposition table and
centre-first move ordering, searching ``solver_depth`` plies. Scores are integers:

* a forced win found ``d`` plies ahead scores ``WIN - d`` (so faster wins score higher and
  slower losses lose less); ``values`` reports any found win or loss as exactly +1 / -1;
* a draw (full board) scores 0;
* at the depth limit a heuristic scores the position in (-0.9, 0.9) (see :func:`heuristic`).

Every node also checks, at no depth cost, whether the side to move can win at once (a win
in 1) and whether the opponent has two immediate threats (a loss in 2), and when the
opponent has exactly one immediate threat it only searches the blocking move, which cannot
change the result. Transposition-table entries are keyed by position *and* remaining depth,
so a cached entry is always a bound on the same depth-limited value: values never depend on
what was searched before (with or without the table they are equal; a test checks it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

import chessrl
from chessrl.game import Game, Observation
from chessrl.schema import opt

NAME = "connect_four"
WIDTH, HEIGHT = 7, 6
H1 = HEIGHT + 1
BOTTOM = sum(1 << (c * H1) for c in range(WIDTH))  # lowest cell of every column
BOARD = BOTTOM * ((1 << HEIGHT) - 1)  # every playable cell
COLUMN = [((1 << HEIGHT) - 1) << (c * H1) for c in range(WIDTH)]
TOP = [1 << (HEIGHT - 1 + c * H1) for c in range(WIDTH)]
ORDER = (3, 2, 4, 1, 5, 0, 6)  # centre first: best moves tend to be central
CENTRE = COLUMN[3]
NEAR_CENTRE = COLUMN[2] | COLUMN[4]

WIN = 10_000  # score of a win now; a win d plies ahead scores WIN - d
PROVEN = 9_500  # |score| above this is a proven win/loss (at most 42 plies away)
HEURISTIC_MAX = 9_000  # heuristic scores stay strictly inside (-HEURISTIC_MAX, HEURISTIC_MAX)
INF = 10**6
EXACT, LOWER, UPPER = 0, 1, 2

# Cell -> bit, in token order: top row first, left to right (as the board is drawn).
CELL_BITS = np.array(
    [c * H1 + r for r in reversed(range(HEIGHT)) for c in range(WIDTH)], dtype=np.int64
)


class C4State(NamedTuple):
    """A position: ``cur`` = stones of the side to move, ``mask`` = all stones."""

    cur: int
    mask: int


@dataclass
class ConnectFourOptions:
    """``[env]`` options of ``name = "connect_four"``."""

    start: str = opt(
        "empty",
        "Start position: 'empty' board; 'random' = random_plies uniformly random "
        "moves from the empty board (never a finished game); 'mixed' = a uniformly "
        "drawn number of such moves in [0, random_plies].",
        choices=("empty", "random", "mixed"),
    )
    random_plies: int = opt(
        4,
        "Random moves played before the start when start = 'random' (at most this "
        "many for 'mixed').",
        ge=0,
        le=30,
    )
    max_plies: int = opt(
        42, "Truncate a trajectory after this many plies (a full board is 42).", ge=1, le=42
    )
    solver_depth: int = opt(
        4,
        "Plies the alpha-beta reward engine searches before the heuristic "
        "(values); cost grows about 3-4x per ply.",
        ge=0,
        le=14,
    )
    opponent_depth: int = opt(
        4,
        "Plies the engine opponent (engine_actions, the 'solver' eval opponent) "
        "searches to choose its move.",
        ge=1,
        le=14,
    )
    tt_size: int = opt(
        500_000,
        "Transposition-table entries kept before the table is cleared "
        "(roughly 200 bytes each, so the default is ~100 MB at most).",
        ge=1000,
    )


# --- bitboard helpers ---------------------------------------------------------------------


def winning_cells(p: int, mask: int) -> int:
    """Empty cells where one more stone of ``p`` would complete four in a row."""
    r = (p << 1) & (p << 2) & (p << 3)  # vertical: three stones below the cell
    for s in (H1, HEIGHT, H1 + 1):  # horizontal, diagonal /, diagonal \ (in bit steps)
        q = (p << s) & (p << 2 * s)
        r |= q & (p << 3 * s)
        r |= q & (p >> s)
        q = (p >> s) & (p >> 2 * s)
        r |= q & (p << s)
        r |= q & (p >> 3 * s)
    return r & (BOARD ^ mask)


def has_won(p: int) -> bool:
    """Whether stones ``p`` contain four in a row in any of the four directions."""
    for s in (1, H1, HEIGHT, H1 + 1):
        m = p & (p >> s)
        if m & (m >> 2 * s):
            return True
    return False


def heuristic(cur: int, mask: int, my_threats: int, opp_threats: int) -> int:
    """Leaf score for the side to move, an int in (-9000, 9000), i.e. a value in (-0.9, 0.9).

    ``raw = (my threats - opponent threats) + 0.15 * (my centre weight - opponent's)`` where a
    *threat* is an empty cell (playable now or later) that would complete four for that
    player, and the centre weight counts stones in column 3 twice and in columns 2 and 4
    once (central stones take part in the most lines). The score is ``0.9 * tanh(raw / 2)``:
    one extra threat is worth about 0.42, one central stone about 0.07.
    """
    opp = cur ^ mask
    raw = (my_threats.bit_count() - opp_threats.bit_count()) + 0.15 * (
        2 * ((cur & CENTRE).bit_count() - (opp & CENTRE).bit_count())
        + (cur & NEAR_CENTRE).bit_count()
        - (opp & NEAR_CENTRE).bit_count()
    )
    return int(HEURISTIC_MAX * math.tanh(raw / 2))


def parse_moves(moves: str | Sequence[int]) -> C4State:
    """The position after ``moves``: column indices 0..6, as a list or a digit string ``"3342"``."""
    cols = (
        [int(ch) for ch in moves if str(ch).strip()]
        if isinstance(moves, str)
        else [int(m) for m in moves]
    )
    cur = mask = 0
    for i, c in enumerate(cols):
        if not 0 <= c < WIDTH or mask & TOP[c] or has_won(cur ^ mask):
            raise ValueError(f"move {i} (column {c}) of {moves!r} is not legal")
        cur, mask = cur ^ mask, mask | (mask + (1 << (c * H1)))
    return C4State(cur, mask)


def _to_solver(s: int) -> float:
    """An integer score as a value in [-1, 1]: proven results are exactly +-1."""
    if s > PROVEN:
        return 1.0
    if s < -PROVEN:
        return -1.0
    return s / WIN


class Solver:
    """Depth-limited negamax with alpha-beta, a transposition table and centre-first ordering."""

    def __init__(self, tt_size: int = 500_000, use_tt: bool = True):
        self.tt: dict[int, int] = {}  # (key << 4 | depth) -> score << 2 | flag (one int: compact)
        self.best: dict[int, int] = {}  # key -> best column found at any depth (ordering only)
        self.tt_size = tt_size
        self.use_tt = use_tt
        self.nodes = 0

    def clear(self) -> None:
        self.tt.clear()
        self.best.clear()

    def score(self, state: C4State, depth: int) -> int:
        """Negamax score of ``state`` for the side to move, searching ``depth`` plies."""
        cur, mask = state
        if has_won(cur ^ mask):  # the player who just moved connected four
            return -WIN
        if mask == BOARD:
            return 0
        if len(self.tt) > self.tt_size:  # entries are exact per depth, so forgetting is safe
            self.clear()
        return self._negamax(cur, mask, depth, -INF, INF)

    def move_scores(self, state: C4State, depth: int) -> dict[int, int]:
        """Exact scores of every move tying for best (others omitted), searching ``depth`` plies."""
        cur, mask = state
        possible = (mask + BOTTOM) & BOARD
        wins = winning_cells(cur, mask) & possible
        legal = [c for c in ORDER if possible & COLUMN[c]]
        if wins:
            return {c: WIN - 1 for c in legal if wins & COLUMN[c]}
        if len(self.tt) > self.tt_size:
            self.clear()
        best, out = -INF, {}
        for c in legal:
            child_mask = mask | (mask + (1 << (c * H1)))
            # A window just below the best so far: worse moves fail low cheaply, while moves
            # that tie or beat it get exact scores (integer scores make ``best - 1`` exact).
            lo = best - 1
            s = _adj(-self._negamax(cur ^ mask, child_mask, depth - 1, -INF, -_adjinv(lo)))
            if s > best:
                best, out = s, {c: s}
            elif s == best:
                out[c] = s
        return out

    def _negamax(self, cur: int, mask: int, depth: int, alpha: int, beta: int) -> int:
        """Fail-soft negamax: exact if alpha < score < beta, else a bound on the correct side.

        Precondition: the position is not won by the player who just moved.
        """
        self.nodes += 1
        possible = (mask + BOTTOM) & BOARD
        if not possible:
            return 0  # full board, nobody connected: draw
        my_threats = winning_cells(cur, mask)
        if my_threats & possible:
            return WIN - 1
        opp = cur ^ mask
        opp_threats = winning_cells(opp, mask)
        forced = opp_threats & possible
        if forced & (forced - 1):
            return -(WIN - 2)  # two immediate threats: the opponent wins next move
        if depth <= 0:
            return heuristic(cur, mask, my_threats, opp_threats)

        key = cur + mask  # unique per position (Pons' key)
        tt_key = (key << 4) | depth
        if self.use_tt:
            entry = self.tt.get(tt_key)
            if entry is not None:
                flag, val = entry & 3, entry >> 2
                if (
                    flag == EXACT
                    or (flag == LOWER and val >= beta)
                    or (flag == UPPER and val <= alpha)
                ):
                    return val

        if forced:  # a single threat: every other move loses at once, so only the block counts
            moves: Sequence[int] = [c for c in range(WIDTH) if forced & COLUMN[c]]
        else:
            moves = [c for c in ORDER if possible & COLUMN[c]]
            first = self.best.get(key) if self.use_tt else None
            if first is not None and first in moves and moves[0] != first:
                moves.remove(first)
                moves.insert(0, first)

        alpha0, best, best_move = alpha, -INF, moves[0]
        a = alpha
        for c in moves:
            child = -self._negamax(
                opp, mask | (mask + (1 << (c * H1))), depth - 1, -_adjinv(beta), -_adjinv(a)
            )
            s = _adj(child)
            if s > best:
                best, best_move = s, c
                if s > a:
                    a = s
                    if a >= beta:
                        break

        if self.use_tt:
            flag = UPPER if best <= alpha0 else LOWER if best >= beta else EXACT
            self.tt[tt_key] = (best << 2) | flag
            self.best[key] = best_move
        return best


def _adj(s: int) -> int:
    """A child's proven score seen from one ply higher: one ply further away."""
    if s > PROVEN:
        return s - 1
    if s < -PROVEN:
        return s + 1
    return s


def _adjinv(s: int) -> int:
    """Inverse of :func:`_adj` on reachable scores and window bounds (maps +-INF to itself)."""
    if s >= INF or s <= -INF:
        return s
    if s > PROVEN - 1:
        return s + 1
    if s < -(PROVEN - 1):
        return s - 1
    return s


class ConnectFour(Game):
    """Connect Four with a depth-limited alpha-beta reward engine and opponent."""

    name = NAME
    n_actions = WIDTH
    obs_len = WIDTH * HEIGHT
    obs_vocab = 3  # 0 empty, 1 the side to move's stone, 2 the opponent's stone

    def __init__(self, options: ConnectFourOptions | None = None, seed: int = 0):
        self.options = options or ConnectFourOptions()
        self.max_plies = self.options.max_plies
        self.solver = Solver(self.options.tt_size)
        self._value_cache: dict[int, float] = {}  # position key -> value at solver_depth
        self.reseed(seed)

    # --- the Game contract -----------------------------------------------------------
    def reseed(self, seed: int) -> None:
        """Own generators, never the global RNG: engine tie-breaks and the random eval opponent
        draw from separate streams, so evaluating does not shift the engine's choices."""
        self._engine_rng, self._random_rng = np.random.default_rng(seed).spawn(2)

    def initial_states(self, n: int, rng: np.random.Generator) -> list[C4State]:
        """``n`` start positions: empty, or ``random_plies`` random moves that do not end the
        game."""
        if self.options.start == "empty" or self.options.random_plies == 0:
            return [C4State(0, 0)] * n
        if self.options.start == "mixed":
            return [
                self._random_start(rng, int(rng.integers(0, self.options.random_plies + 1)))
                for _ in range(n)
            ]
        return [self._random_start(rng, self.options.random_plies) for _ in range(n)]

    def eval_states(self, n: int, rng: np.random.Generator) -> list[C4State]:
        """Evaluation openings: 2 random moves (each played with both colours), so games vary."""
        return [self._random_start(rng, 2) for _ in range(n)]

    def _random_start(self, rng: np.random.Generator, plies: int) -> C4State:
        while True:  # restart on a dead end (every move would end the game); rare
            cur = mask = 0
            for _ in range(plies):
                ok = []
                for c in range(WIDTH):
                    if mask & TOP[c]:
                        continue
                    m2 = mask | (mask + (1 << (c * H1)))
                    if m2 != BOARD and not has_won(cur | (m2 ^ mask)):
                        ok.append((cur ^ mask, m2))
                if not ok:
                    break
                cur, mask = ok[int(rng.integers(len(ok)))]
            else:
                return C4State(cur, mask)

    def copy_state(self, state: C4State) -> C4State:
        """States are immutable tuples of ints, so the state itself is an independent copy."""
        return C4State(int(state[0]), int(state[1]))

    def _arrays(self, states: Sequence[C4State]) -> tuple[np.ndarray, np.ndarray]:
        cur = np.fromiter((s[0] for s in states), dtype=np.int64, count=len(states))
        mask = np.fromiter((s[1] for s in states), dtype=np.int64, count=len(states))
        return cur, mask

    def observe(self, states: Sequence[C4State]) -> Observation:
        """Tokens per cell (top row first): 0 empty, 1 the side to move's stone, 2 the
        opponent's."""
        cur, mask = self._arrays(states)
        own = (cur[:, None] >> CELL_BITS) & 1
        occupied = (mask[:, None] >> CELL_BITS) & 1
        tokens = np.where(occupied == 0, 0, np.where(own == 1, 1, 2)).astype(np.int64)
        opp = cur ^ mask
        won = np.zeros(len(states), dtype=bool)
        for s in (1, H1, HEIGHT, H1 + 1):  # vectorised has_won over the batch
            m = opp & (opp >> s)
            won |= (m & (m >> (2 * s))) != 0
        full = mask == BOARD
        terminated = won | full
        tops = np.array(TOP, dtype=np.int64)
        action_mask = ((mask[:, None] & tops) == 0) & ~terminated[:, None]
        n_stones = occupied.sum(axis=1)
        reason = ["win" if w else "draw" if f else "" for w, f in zip(won, full)]
        return Observation(
            tokens=tokens,
            action_mask=action_mask,
            to_play=(n_stones % 2).astype(np.int64),
            terminated=terminated,
            reason=reason,
        )

    def play(self, states: Sequence[C4State], actions: np.ndarray) -> list[C4State]:
        """Drop the side to move's stone in column ``action``; raises ValueError if illegal."""
        out = []
        for st, a in zip(states, np.asarray(actions).reshape(-1)):
            cur, mask = st
            c = int(a)
            if not 0 <= c < WIDTH or mask & TOP[c] or has_won(cur ^ mask):
                raise ValueError(f"illegal connect-four action {a} in {self.state_to_str(st)}")
            out.append(C4State(cur ^ mask, mask | (mask + (1 << (c * H1)))))
        return out

    def values(self, states: Sequence[C4State]) -> np.ndarray:
        """Solver value at ``solver_depth`` for the side to move: exact +-1 / 0 when proven or
        over."""
        out = np.empty(len(states), dtype=np.float32)
        cache = self._value_cache
        for i, (cur, mask) in enumerate(states):
            key = cur + mask
            v = cache.get(key)
            if v is None:
                if len(cache) > self.options.tt_size:
                    cache.clear()
                v = cache[key] = _to_solver(
                    self.solver.score(C4State(cur, mask), self.options.solver_depth)
                )
            out[i] = v
        return out

    def engine_actions(self, states: Sequence[C4State]) -> np.ndarray:
        """The solver's best column at ``opponent_depth`` (random among equal best; faster wins
        first)."""
        return self._solver_moves(states, self._engine_rng)

    def _solver_moves(self, states: Sequence[C4State], rng: np.random.Generator) -> np.ndarray:
        out = np.zeros(len(states), dtype=np.int64)
        for i, st in enumerate(states):
            if has_won(st[0] ^ st[1]) or st[1] == BOARD:
                continue  # finished: no move; 0 keeps the output well-formed
            best = sorted(self.solver.move_scores(st, self.options.opponent_depth))
            out[i] = best[int(rng.integers(len(best)))]
        return out

    def _random_moves(self, states: Sequence[C4State]) -> np.ndarray:
        out = np.zeros(len(states), dtype=np.int64)
        for i, (cur, mask) in enumerate(states):
            legal = [c for c in range(WIDTH) if not mask & TOP[c]]
            if legal and not has_won(cur ^ mask):
                out[i] = legal[int(self._random_rng.integers(len(legal)))]
        return out

    def eval_opponents(self) -> dict[str, Callable[[Sequence[C4State]], np.ndarray]]:
        """``solver``: the engine at ``opponent_depth``; ``random``: uniformly random legal
        columns."""
        return {"solver": self.engine_actions, "random": self._random_moves}

    def action_to_str(self, action: int) -> str:
        """The column index, 0 (left) .. 6 (right)."""
        return str(int(action))

    def state_to_str(self, state: C4State) -> str:
        """Rows top to bottom joined by ``/`` (X moved first, O second) and whose turn it is."""
        cur, mask = state
        n = mask.bit_count()
        x = cur if n % 2 == 0 else cur ^ mask  # the first player's stones
        rows = []
        for r in reversed(range(HEIGHT)):
            row = ""
            for c in range(WIDTH):
                bit = 1 << (c * H1 + r)
                row += "." if not mask & bit else "X" if x & bit else "O"
            rows.append(row)
        if has_won(cur ^ mask):
            tail = f"{'OX'[n % 2]} won"
        elif mask == BOARD:
            tail = "draw"
        else:
            tail = f"{'XO'[n % 2]} to move"
        return f"{'/'.join(rows)} ({tail})"

    def state_from_options(self, options: dict[str, Any]) -> C4State:
        """The Gym view's ``reset(options=...)``: ``{"moves": "3342"}`` or
        ``{"moves": [3, 3, 4, 2]}``."""
        if set(options) != {"moves"}:
            raise ValueError(
                "connect_four reset options take only 'moves' (columns 0..6), "
                f"got {sorted(options)}"
            )
        return parse_moves(options["moves"])


def make_game(options: ConnectFourOptions, seed: int = 0) -> ConnectFour:
    """The factory registered with the core."""
    return ConnectFour(options, seed)


@chessrl.hookimpl
def chessrl_register_games(register) -> None:
    register(NAME, make_game, ConnectFourOptions)


def make_gym_env(render_mode: str | None = None, seed: int = 0, **options: Any):
    """Gymnasium entry point of ``chessrl/ConnectFour-v0``: :func:`chessrl.gym_env.make_gym_env`
    (keyword args are ``[env]`` options, validated, plus ``illegal_action``)."""
    from chessrl.gym_env import make_gym_env as core_make_gym_env

    return core_make_gym_env(NAME, render_mode=render_mode, seed=seed, **options)
