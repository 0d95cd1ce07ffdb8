"""The chess game's ``[env]`` options (every key besides ``name``)."""

from __future__ import annotations

from dataclasses import dataclass

from chessrl.envs.chess.encoding import FEATURES
from chessrl.schema import opt

ELO_RANGE = (1350, 2850)  # Stockfish 15.1's UCI_Elo option (min, max)


def rung_metric_name(rung: str) -> str:
    """The metrics name of a ladder rung: 'skill:0' -> 'skill_0',
    'eps0.5:random' -> 'eps05_random'."""
    return rung.replace(":", "_").replace(".", "")


@dataclass
class ChessOptions:
    """Options of the chess game; documented in docs/chess.md."""

    reward: str = opt(
        "stockfish",
        "what scores non-terminal positions: 'stockfish' (the engine pool) "
        "or 'none' (0; only game results count, no engine needed)",
        choices=("stockfish", "none"),
    )
    features: str = opt(
        "pieces",
        "what a square's observation token says: 'pieces' (the piece on it), 'attacks' (the "
        "piece and how often each side attacks the square, 0/1/2+) or 'checks' (attacks, and "
        "which of the mover's pieces would check the opponent's king from the square; "
        "docs/chess.md#observation)",
        choices=FEATURES,
    )
    stockfish_path: str = opt(
        "/usr/games/stockfish", "the Stockfish executable (a path or a name on PATH)"
    )
    engines: int = opt(2, "Stockfish processes in the pool (each runs with Threads=1)", ge=1, le=64)
    hash_mb: int = opt(16, "hash table size of each Stockfish process, in MiB", ge=1, le=4096)
    depth: int = opt(
        8, "search depth that pins the reward engine's strength; 0 = use nodes instead", ge=0, le=40
    )
    nodes: int = opt(
        0, "node budget that pins the reward engine's strength; 0 = use depth instead", ge=0
    )
    static_eval: bool = opt(
        False,
        "score positions by Stockfish's static NNUE evaluation (the `eval` "
        "command, no search; a position in check gets a depth-1 search): many times "
        "faster, weaker (docs/chess.md#reward-settings); needs depth = 0 and nodes = 0",
    )
    fresh_search: bool = opt(
        True,
        "start every reward search from a cleared hash (ucinewgame): a value is a "
        "function of the position alone, so runs and resumes are bit-exact; false is "
        "~25% faster at depth 8 and a position keeps the first value computed for it "
        "while it stays in the cache",
    )
    value_scale: float = opt(
        271.6,
        "centipawns per logistic unit: a score of cp centipawns is worth "
        "0.9 * (2/(1+exp(-cp/value_scale)) - 1); mates lie above 0.9, shorter ones higher "
        "(docs/chess.md#values) (271.6 is Lichess's win-probability fit)",
        gt=0,
    )
    cache_size: int = opt(
        200_000, "positions kept in the LRU cache of engine values; 0 disables it", ge=0
    )
    engine_retries: int = opt(
        2,
        "times a failed engine call is retried on a restarted engine before it raises",
        ge=0,
        le=10,
    )
    engine_timeout: float = opt(
        60.0,
        "seconds one engine search may take before the engine is killed and the search retried",
        gt=0,
    )
    engine_move_depth: int = opt(
        4, "search depth of Stockfish's move for teacher forcing and engine actions", ge=1, le=40
    )
    opponent_depth: int = opt(4, "search depth of the 'stockfish' evaluation opponent", ge=1, le=40)
    opponent_skill: int = opt(
        20, "UCI Skill Level (0-20) of the 'stockfish' evaluation opponent; 20 = full", ge=0, le=20
    )
    eval_ladder: list[str] = opt(
        ["random", "material_greedy", "skill:0"],
        "evaluation opponents, rungs of the benchmark's ladder (docs/benchmark.md): "
        "'random', 'material_greedy', 'skill:S', 'nodes:N', 'depth:D', 'epsP:<rung>', or "
        "'stockfish' (opponent_skill at opponent_depth); metrics eval/<rung>/... with ':' "
        "as '_' and '.' dropped",
    )
    benchmark: bool = opt(
        True,
        "score the held-out benchmark (agreement with Stockfish, mate in one, material; "
        "docs/benchmark.md) at every evaluation, and an Elo from the ladder games",
    )
    benchmark_seed: int = opt(
        0,
        "seed of the held-out benchmark: 0 is shipped with chessrl, another seed is built "
        "once (about 10 minutes on 2 cores) into ~/.cache/chessrl/benchmark",
        ge=0,
    )
    start: str = opt(
        "standard",
        "start positions: 'standard', 'file' (start_file), 'random' (random_plies and "
        "phase_mix) or 'selfplay' (positions along Stockfish self-play games at selfplay_depth "
        "that start with random_plies random plies)",
        choices=("standard", "file", "random", "selfplay"),
    )
    start_file: str = opt(
        "", "file of start positions, one FEN or EPD per line ('#' comments), for start='file'"
    )
    random_plies: int = opt(
        8, "uniformly random plies from the standard position for an 'opening' start", ge=0, le=200
    )
    phase_mix: list[float] = opt(
        [1.0, 0.0, 0.0],
        "weights of opening, middlegame (20-40 random plies) and "
        "endgame (kings + 1-4 random pieces) starts, for start='random'; a 4th weight "
        "draws that share of the roots from self-play games as start='selfplay' does, "
        "a 5th from tactics: random-game positions with a mate in one (half) or a "
        "tempting capture or promotion (half)",
    )
    selfplay_depth: int = opt(
        2,
        "search depth of the engine moves in start = 'selfplay' games (each a search "
        "from a cleared hash, so the positions are a function of the seed)",
        ge=1,
        le=20,
    )
    max_plies: int = opt(200, "plies after which a game is truncated", ge=1, le=10_000)

    def __post_init__(self) -> None:
        if sum((self.depth > 0, self.nodes > 0, self.static_eval)) != 1:
            raise ValueError(
                f"pin the reward engine's strength with exactly one of depth ({self.depth}) > 0, "
                f"nodes ({self.nodes}) > 0 or static_eval = true ({str(self.static_eval).lower()})"
            )
        if (
            len(self.phase_mix) not in (3, 4, 5)
            or any(w < 0 for w in self.phase_mix)
            or sum(self.phase_mix) <= 0
        ):
            raise ValueError(
                f"phase_mix = {self.phase_mix} must be 3 to 5 non-negative weights "
                "(opening, middlegame, endgame[, selfplay[, tactics]]) with a positive sum"
            )
        from chessrl.envs.chess.benchmark import _parse_rung

        for rung in self.eval_ladder:
            if rung != "stockfish":
                try:
                    _parse_rung(rung)
                except ValueError as exc:
                    raise ValueError(f"eval_ladder: {exc}") from None
        if len(set(map(rung_metric_name, self.eval_ladder))) != len(self.eval_ladder):
            raise ValueError(f"eval_ladder = {self.eval_ladder} names a rung twice")
        if self.start == "file" and not self.start_file:
            raise ValueError("start = 'file' needs start_file, a file of FEN/EPD lines")
