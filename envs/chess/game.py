"""ChessGame: the :class:`chessrl.game.Game` contract over python-chess boards.

States are :class:`ChessState` objects (a ``chess.Board`` plus what ``observe`` learnt about
it, so ``play`` and ``values`` never generate the legal moves a second time). Everything
is from the side to move's perspective; see :mod:`chessrl.envs.chess.encoding`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import chess
import chess.engine
import numpy as np

from chessrl.envs.chess import encoding as enc
from chessrl.envs.chess.options import ChessOptions, rung_metric_name
from chessrl.envs.chess.starts import StartSampler, parse_position
from chessrl.envs.chess.stockfish import StockfishPool, check_stockfish
from chessrl.game import Game, Observation

_KEY_TO_ACTION_FLAT = enc.KEY_TO_ACTION.reshape(-1)
_TURN_OFFSET = {chess.WHITE: 1 << 15, chess.BLACK: 0}  # row of KEY_TO_ACTION in the flat table


class ChessState:
    """A board and the cached results of observing it (cleared by every move)."""

    __slots__ = ("board", "mask", "reason")

    def __init__(self, board: chess.Board):
        self.board = board
        self.mask: np.ndarray | None = None  # bool [n_actions] legal actions, once observed
        self.reason: str | None = None  # "" while playing, the game-end reason, or unknown

    def __repr__(self) -> str:
        return f"ChessState({self.board.fen()!r})"


def _as_board(state: Any) -> chess.Board:
    return state.board if isinstance(state, ChessState) else state


def terminal_reason(board: chess.Board, has_moves: bool, repetitions: int) -> str:
    """Why the game is over ("" if it is not), in this order of precedence: checkmate,
    stalemate, insufficient_material, fifty_moves (halfmove clock >= 100: claimable),
    threefold_repetition (the position occurs for the third time: claimable)."""
    if not has_moves:
        return "checkmate" if board.is_check() else "stalemate"
    # Only kings, knights and bishops can be insufficient; the cheap test skips most boards.
    if not (board.pawns | board.rooks | board.queens) and board.is_insufficient_material():
        return "insufficient_material"
    if board.halfmove_clock >= 100:
        return "fifty_moves"
    if repetitions >= 2:
        return "threefold_repetition"
    return ""


def repetitions(board: chess.Board) -> int:
    """How often the current position occurred before (0, 1, or 2 meaning "two or more").

    A position can only recur within the reversible plies since the last capture or pawn
    move (the halfmove clock), with the same side to move and after at least 4 plies; a scan
    of that window by occupancy rules out almost every board, so python-chess's exact (but
    whole-history) ``is_repetition`` runs only on real candidates.
    """
    clock = board.halfmove_clock
    if clock < 4:
        return 0
    stack = getattr(board, "_stack", None)  # python-chess's per-move state stack
    if stack is not None:
        occupied = board.occupied
        candidates = sum(
            1 for k in range(4, min(clock, len(stack)) + 1, 2) if stack[-k].occupied == occupied
        )
        if candidates == 0:
            return 0
    if not board.is_repetition(2):
        return 0
    return 2 if clock >= 8 and board.is_repetition(3) else 1


class ChessGame(Game):
    """Chess with a 1968-move vocabulary, mirrored observations and a Stockfish reward pool."""

    name = "chess"
    n_actions = enc.N_ACTIONS
    obs_len = enc.OBS_LEN
    obs_vocab = enc.OBS_VOCAB

    def __init__(self, options: ChessOptions | None = None, seed: int = 0, **overrides: Any):
        """Build from ``options`` (default options) with field ``overrides``; a missing
        Stockfish binary is a :class:`UserError` here when ``reward='stockfish'``."""
        options = options or ChessOptions()
        if overrides:
            options = dataclasses.replace(options, **overrides)
        self.options = options
        self.obs_vocab = enc.obs_vocab(options.features)
        self._features = options.features
        self.max_plies = options.max_plies
        self.seed = seed
        self.starts = StartSampler(
            options.start,
            options.start_file,
            options.random_plies,
            options.phase_mix,
            engine=lambda boards: self.pool.play_moves(
                boards, chess.engine.Limit(depth=options.selfplay_depth), fresh=options.fresh_search
            ),
            exclude=(lambda: self.held_out().keys()) if options.benchmark else None,
        )
        if options.reward == "stockfish":
            check_stockfish(options.stockfish_path)  # fail at construction, not mid-run
        self._pool: StockfishPool | None = None
        self._held_out = None
        self._opponent_rng = np.random.default_rng([seed, 0xC4E55])
        self._eval_seed = seed

    # --- engine -----------------------------------------------------------------------
    @property
    def pool(self) -> StockfishPool:
        """The Stockfish pool, started on first use."""
        if self._pool is None:
            o = self.options
            self._pool = StockfishPool(
                o.stockfish_path,
                o.engines,
                o.hash_mb,
                depth=o.depth if o.depth > 0 else None,
                nodes=o.nodes if o.nodes > 0 else None,
                static=o.static_eval,
                cache_size=o.cache_size,
                value_scale=o.value_scale,
                retries=o.engine_retries,
                timeout=o.engine_timeout,
                fresh=o.fresh_search,
            )
        return self._pool

    @property
    def engine_seconds(self) -> float:
        """Cumulative wall time spent waiting on Stockfish (values and engine moves)."""
        return self._pool.engine_seconds if self._pool is not None else 0.0

    def stats(self) -> dict[str, float]:
        """Reward cache and engine counters: hits, misses, hit_rate, evaluations, restarts, ..."""
        if self._pool is None:
            return {
                "hits": 0,
                "misses": 0,
                "hit_rate": 0.0,
                "evaluations": 0,
                "restarts": 0,
                "cache_entries": 0,
                "engine_seconds": 0.0,
                "engine_busy_seconds": 0.0,
            }
        return self._pool.stats()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # --- the contract ---------------------------------------------------------------------
    def initial_states(self, n: int, rng: np.random.Generator) -> list[ChessState]:
        return [ChessState(b) for b in self.starts.sample(n, rng)]

    def copy_state(self, state: ChessState | chess.Board) -> ChessState:
        """An independent copy (with its move history); also accepts a bare ``chess.Board``."""
        board = _as_board(state)
        copy = ChessState(board.copy())
        if isinstance(state, ChessState):  # the same position: what observing it learnt still holds
            copy.mask, copy.reason = state.mask, state.reason
        return copy

    def state_from_options(self, options: dict) -> ChessState:
        """A state from Gym ``reset(options=...)``: ``{"fen": FEN}`` and/or
        ``{"moves": [uci, ...]}``."""
        unknown = set(options) - {"fen", "moves"}
        if unknown:
            raise ValueError(
                f"unknown reset options {sorted(unknown)}; chess accepts 'fen' and 'moves'"
            )
        board = chess.Board()
        if "fen" in options:
            try:
                board = parse_position(str(options["fen"]))
            except ValueError as exc:
                raise ValueError(f"invalid FEN {options['fen']!r}: {exc}") from None
        moves = options.get("moves", [])
        if isinstance(moves, (str, bytes)) or not isinstance(moves, (list, tuple)):
            raise ValueError(
                f"'moves' must be a list of UCI moves, e.g. ['e2e4', 'e7e5'], not {moves!r}"
            )
        for uci in moves:
            try:
                move = board.parse_uci(str(uci))
                if not move:  # "0000": python-chess's null move, a pass that is no chess move
                    raise ValueError("a null move is not a move")
            except ValueError as exc:
                raise ValueError(f"illegal move {uci!r} in {board.fen()}: {exc}") from None
            board.push(move)
        return ChessState(board)

    def observe(self, states: Sequence[ChessState]) -> Observation:
        n = len(states)
        features = []
        keys: list[int] = []
        counts = np.empty(n, dtype=np.int64)
        to_play = np.empty(n, dtype=np.int64)
        terminated = np.zeros(n, dtype=bool)
        reasons = []
        for i, st in enumerate(states):
            b = st.board
            off = _TURN_OFFSET[b.turn]
            legal = [
                m.from_square | (m.to_square << 6) | ((m.promotion or 0) << 12) | off
                for m in b.legal_moves
            ]
            keys.extend(legal)
            counts[i] = len(legal)
            to_play[i] = 0 if b.turn else 1
            reps = repetitions(b)
            reason = terminal_reason(b, bool(legal), reps)
            st.reason = reason
            reasons.append(reason)
            terminated[i] = bool(reason)
            features.append(
                enc.board_features(
                    b, b.ep_square is not None and b.has_legal_en_passant(), reps, self._features
                )
            )
        mask = np.zeros((n, self.n_actions), dtype=bool)
        actions = _KEY_TO_ACTION_FLAT[np.asarray(keys, dtype=np.int64)]
        if actions.size and actions.min() < 0:  # impossible for legal chess moves; never silent
            raise AssertionError("a legal move is missing from the action vocabulary")
        mask[np.repeat(np.arange(n), counts), actions] = True
        # A draw by rule ends the game although python-chess still lists moves; the mask keeps
        # them (it always equals the legal moves) and `terminated` says the game is over.
        for i, st in enumerate(states):
            st.mask = mask[i]
        return Observation(
            tokens=enc.encode(features),
            action_mask=mask,
            to_play=to_play,
            terminated=terminated,
            reason=reasons,
        )

    def play(self, states: Sequence[ChessState], actions: np.ndarray) -> list[ChessState]:
        """Push each action's move in place; ValueError on an illegal action (one outside
        ``0..n_actions-1``, not legal in the position, or played after the game ended by a rule
        that leaves moves on the board: insufficient material, fifty moves, repetition)."""
        for st, a in zip(states, np.asarray(actions).tolist()):
            b = st.board
            if not isinstance(a, int) or not 0 <= a < self.n_actions:
                raise ValueError(f"illegal action {a!r} (not in 0..{self.n_actions - 1})")
            move = enc.ACTION_MOVES[b.turn][a]
            if st.mask is not None:  # observed: the mask, and the game-end reason observe found
                legal = bool(st.mask[a]) and not st.reason
            else:  # not observed since the last move: check the slow way
                legal = not self._reason(st) and b.is_legal(move)
            if not legal:
                raise ValueError(f"illegal action {a} ({move.uci()}) in {b.fen()}")
            b.push(move)
            st.mask = None
            st.reason = None
        return list(states)

    def _reason(self, st: ChessState) -> str:
        if st.reason is None:
            b = st.board
            st.reason = terminal_reason(b, any(b.generate_legal_moves()), repetitions(b))
        return st.reason

    def values(self, states: Sequence[ChessState]) -> np.ndarray:
        out = np.zeros(len(states), dtype=np.float32)
        live = []
        for i, st in enumerate(states):
            reason = self._reason(st)
            if reason == "checkmate":
                out[i] = -1.0  # the side to move is mated
            elif not reason:
                live.append(i)
            # other reasons are draws: 0
        if live and self.options.reward == "stockfish":
            out[live] = self.pool.values([states[i].board for i in live])
        return out

    def engine_actions(self, states: Sequence[ChessState]) -> np.ndarray:
        """Stockfish's move at ``engine_move_depth``; 0 for finished games (searches from a
        cleared hash unless ``fresh_search = false``)."""
        return self._engine_moves(
            states, self.options.engine_move_depth, None, fresh=self.options.fresh_search
        )

    def _engine_moves(
        self, states: Sequence[ChessState], depth: int, skill: int | None, fresh: bool = True
    ) -> np.ndarray:
        out = np.zeros(len(states), dtype=np.int64)
        live = [i for i, st in enumerate(states) if not self._reason(st)]
        if live:
            moves = self.pool.best_moves([states[i].board for i in live], depth, skill, fresh=fresh)
            for i, m in zip(live, moves):
                out[i] = enc.move_to_action(m, states[i].board.turn)
        return out

    def random_actions(self, states: Sequence[ChessState], rng: np.random.Generator) -> np.ndarray:
        """A uniformly random legal action per state (0 for finished games)."""
        out = np.zeros(len(states), dtype=np.int64)
        for i, st in enumerate(states):
            if self._reason(st):
                continue
            b = st.board
            moves = list(b.legal_moves)
            out[i] = enc.move_to_action(moves[int(rng.integers(len(moves)))], b.turn)
        return out

    def reseed(self, seed: int) -> None:
        """The random eval opponent's generator (the engine's moves draw nothing)."""
        self._opponent_rng = np.random.default_rng([seed, 0xC4E55])
        self._eval_seed = seed

    def eval_opponents(self) -> dict[str, Callable[[Sequence[ChessState]], np.ndarray]]:
        """The ``eval_ladder`` rungs by metrics name (docs/benchmark.md), their generators drawn
        from the game seed or the last :meth:`reseed`; "stockfish" is Stockfish at
        ``opponent_skill`` and ``opponent_depth``."""
        from chessrl.envs.chess.benchmark import _parse_rung, rung_opponent

        o = self.options
        out: dict[str, Callable[[Sequence[ChessState]], np.ndarray]] = {}
        for k, rung in enumerate(o.eval_ladder):
            if rung == "stockfish":
                out[rung] = lambda states: self._engine_moves(
                    states, o.opponent_depth, o.opponent_skill
                )
            elif rung == "random":  # the game's own generator: seeded, reseeded with the game
                out[rung] = lambda states: self.random_actions(states, self._opponent_rng)
            else:
                pool = self.pool if _parse_rung(rung)[1] in ("skill", "nodes", "depth") else None
                out[rung_metric_name(rung)] = rung_opponent(
                    rung, pool, seed=self._eval_seed + 7919 * k
                )
        return out

    def benchmark(self, policy: Any, matches: dict[str, tuple[float, int]]) -> dict[str, float]:
        """The held-out benchmark's scores of ``policy`` (``agreement/...``, ``mate1/...``,
        ``material/...`` with Wilson intervals) and ``ladder/elo`` (with ``_lo``/``_hi``) from
        ``matches``' scores against rated ladder rungs; {} when ``benchmark = false``."""
        if not self.options.benchmark:
            return {}
        from chessrl.envs.chess.benchmark import choose_fn, elo_estimate

        bench = self.held_out()
        device = next(policy.parameters()).device
        out = dict(bench.score(choose_fn(policy, device=device)))
        ratings = bench.ratings
        rated = {
            rung: matches[rung_metric_name(rung)]
            for rung in self.options.eval_ladder
            if rung in ratings and rung_metric_name(rung) in matches
        }
        if rated:
            elo, lo, hi = elo_estimate(rated, ratings)
            out.update({"ladder/elo": elo, "ladder/elo_lo": lo, "ladder/elo_hi": hi})
        return out

    def held_out(self):
        """The held-out benchmark of ``benchmark_seed`` (loaded once; built on first use if not
        shipped or cached)."""
        if self._held_out is None:
            from chessrl.envs.chess.benchmark import BenchmarkSpec, load_default

            spec = BenchmarkSpec(
                seed=self.options.benchmark_seed,
                stockfish_path=self.options.stockfish_path,
                engines=self.options.engines,
            )
            self._held_out = load_default(spec)
        return self._held_out

    def eval_starts(
        self, n: int, seed: int, plies: int = 8, balance: float = 0.15
    ) -> list[ChessState]:
        """``n`` random balanced openings for evaluation: ``plies`` random plies from the
        standard position whose engine value is within ``balance`` of 0 (the protocol of
        ``chessrl eval``, docs/evaluation.md); drawn from ``seed`` only."""
        from chessrl.envs.chess.evaluate import balanced_openings

        pool = self.pool if self.options.reward == "stockfish" else None
        return [ChessState(b) for b in balanced_openings(n, plies, seed, pool, balance)]

    def action_structure(self) -> np.ndarray:
        """Each move's from-square, to-square (token = square index of the mirrored board) and
        promotion (0 none, 1..4 queen, rook, bishop, knight)."""
        return enc.ACTION_STRUCTURE

    def action_to_str(self, action: int) -> str:
        """The UCI move of ``action`` as white plays it (black plays its vertical mirror)."""
        return enc.UCI[action]

    def state_to_str(self, state: ChessState) -> str:
        return _as_board(state).fen()

    def render(self, state: ChessState) -> str:
        """The board from White's side (upper case White), then its FEN."""
        board = _as_board(state)
        ranks = str(board).splitlines()
        return (
            "\n".join(f"{8 - i} {r}" for i, r in enumerate(ranks))
            + "\n  a b c d e f g h\n"
            + board.fen()
        )

    def parse_action(self, state: ChessState, text: str) -> int:
        """A legal move in UCI (``e2e4``, ``e7e8q``) or SAN (``e4``, ``Nf3``, ``O-O``)."""
        board = _as_board(state)
        try:
            move = board.parse_uci(text.strip())
        except ValueError:
            try:
                move = board.parse_san(text.strip())
            except ValueError:
                raise ValueError(
                    f"'{text.strip()}' is not a legal move here (write it in UCI, e2e4, or SAN, e4)"
                ) from None
        if not move:  # "0000", the null move, parses but is no move
            raise ValueError("0000 is not a move; write a legal move in UCI, e2e4, or SAN, e4")
        return enc.move_to_action(move, board.turn)

    def format_action(self, state: ChessState, action: int) -> str:
        """The move in SAN, e.g. ``Nf3`` (the real move: black's actions are mirrored)."""
        board = _as_board(state)
        return board.san(enc.action_to_move(action, board.turn))


__all__ = ["ChessGame", "ChessState", "ChessOptions", "terminal_reason", "repetitions"]
