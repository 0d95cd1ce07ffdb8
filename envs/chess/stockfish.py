"""A pool of Stockfish processes that scores positions and picks moves, with an LRU cache.

What the pool promises:

* ``values(boards)`` is the engine's score of each (non-terminal) board for the side to move,
  mapped to [-1, 1] by ``2 / (1 + exp(-cp / value_scale)) - 1``; a mate for the side to move
  is +1, a mate against it -1. Scores depend on the position only: the move stack is not sent
  and every search starts from a cleared hash (``ucinewgame``), so a depth- or node-pinned
  score is the same whichever engine of the pool computes it, and it may be cached.
* A batch is spread over the ``engines`` processes concurrently (one thread per engine;
  Stockfish runs with ``Threads=1``). Repeated positions in a batch are searched once.
* A failed search (the process died, hung past ``timeout`` seconds, or answered garbage) is
  retried on a restarted engine; after ``retries`` retries it raises :class:`EngineFailure`.
  A failure is never cached and never turned into a 0.
* Every process is ended by :meth:`close`, by garbage collection of the pool, and at
  interpreter exit (a ``weakref.finalize`` callback), including when the program raises.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
import queue
import shutil
import signal
import threading
import time
import weakref
from collections import OrderedDict
from typing import Callable, Sequence, TypeVar

import chess
import chess.engine
import numpy as np

from chessrl.errors import UserError

T = TypeVar("T")

# What a dead, killed or confused engine raises through python-chess (a call on an engine
# whose event loop is shutting down comes back cancelled).
_ENGINE_ERRORS = (chess.engine.EngineError, chess.engine.EngineTerminatedError, TimeoutError,
                  OSError, EOFError, cf.CancelledError)


class EngineFailure(RuntimeError):
    """Stockfish could not produce a result even after restarts and retries."""


def check_stockfish(path: str) -> str:
    """The executable ``path`` resolves to; :class:`UserError` when there is none."""
    found = shutil.which(path)
    if found is None or not os.access(found, os.X_OK):
        raise UserError(f"stockfish not found at {path}; install Debian's `stockfish` package "
                        "or set `[env] stockfish_path`")
    return found


def score_to_value(score: chess.engine.Score, value_scale: float) -> float:
    """A side-to-move score mapped to [-1, 1]: mates are +-1, centipawns go through a logistic."""
    mate = score.mate()
    if mate is not None:
        return 1.0 if mate > 0 else -1.0
    cp = score.score()
    assert cp is not None
    return 2.0 / (1.0 + math.exp(-cp / value_scale)) - 1.0


def _close_engines(engines: list[chess.engine.SimpleEngine | None]) -> None:
    """End every process in ``engines`` (quit politely, then kill); safe to call twice."""
    for i, eng in enumerate(engines):
        if eng is None:
            continue
        engines[i] = None
        pid = _pid(eng)
        try:
            eng.quit()
        except Exception:  # noqa: BLE001 - already dead or wedged: fall through to kill
            pass
        try:
            eng.close()
        except Exception:  # noqa: BLE001
            pass
        if pid is not None:
            _kill_and_reap(pid)


def _pid(eng: chess.engine.SimpleEngine) -> int | None:
    try:
        return int(eng.transport.get_pid())
    except Exception:  # noqa: BLE001
        return None


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process, read from /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in (b"Z", b"X")


def _kill_and_reap(pid: int) -> None:
    """Make sure ``pid`` is gone: wait briefly after quit, then SIGKILL.

    asyncio's child watcher reaps the process, so we never call waitpid ourselves (stealing
    its exit status would make asyncio warn).
    """
    start = time.monotonic()
    while process_alive(pid):
        waited = time.monotonic() - start
        if waited > 1.0:
            _kill_quietly(pid)
        if waited > 5.0:  # unkillable (e.g. stopped in the kernel): give up rather than hang
            return
        time.sleep(0.005)


_LIVE_POOLS: "weakref.WeakSet[StockfishPool]" = weakref.WeakSet()


def _close_all_pools() -> None:
    """Close every pool still open; runs when the interpreter shuts down."""
    for pool in list(_LIVE_POOLS):
        pool.close()


# python-chess runs each engine's event loop on a non-daemon thread, and the interpreter
# joins non-daemon threads *before* ordinary atexit callbacks run: an unclosed pool would
# hang the exit forever. threading's own exit hooks run before that join (the same hook
# concurrent.futures uses), so engines are closed there; atexit is the fallback.
try:
    threading._register_atexit(_close_all_pools)  # type: ignore[attr-defined]
except (AttributeError, RuntimeError):  # pragma: no cover - other interpreters
    import atexit

    atexit.register(_close_all_pools)


class StockfishPool:
    """``engines`` Stockfish processes scoring positions at a pinned ``limit``; see the module doc."""

    def __init__(self, path: str, engines: int = 2, hash_mb: int = 16, *, depth: int | None = None,
                 nodes: int | None = None, cache_size: int = 100_000, value_scale: float = 271.6,
                 retries: int = 2, timeout: float = 60.0):
        if (depth is None) == (nodes is None):
            raise ValueError("pin the engine strength with exactly one of depth or nodes")
        self.path = check_stockfish(path)
        self.n_engines = engines
        self.hash_mb = hash_mb
        self.limit = chess.engine.Limit(depth=depth) if depth is not None else chess.engine.Limit(nodes=nodes)
        self.cache_size = cache_size
        self.value_scale = value_scale
        self.retries = retries
        self.timeout = timeout
        self._cache: OrderedDict[str, float] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evaluations = 0
        self.restarts = 0
        self.searches = 0               # play_moves / analyse_multipv searches requested
        self.engine_seconds = 0.0       # wall time callers spent waiting on the pool
        self.engine_busy_seconds = 0.0  # summed time of individual engine searches
        self._stats_lock = threading.Lock()
        self._engines: list[chess.engine.SimpleEngine | None] = [None] * engines
        self._free: queue.Queue[int] = queue.Queue()
        for slot in range(engines):
            self._free.put(slot)
        self._executor: cf.ThreadPoolExecutor | None = None
        self._closed = False
        # Runs on close(), on garbage collection and at interpreter exit; holds no reference
        # to self, only to the engine list, so it cannot keep the pool alive.
        self._finalizer = weakref.finalize(self, _close_engines, self._engines)
        _LIVE_POOLS.add(self)

    # --- process management ------------------------------------------------------------
    def _start(self, slot: int) -> chess.engine.SimpleEngine:
        try:
            eng = chess.engine.SimpleEngine.popen_uci(self.path, timeout=self.timeout)
        except (FileNotFoundError, PermissionError):
            raise UserError(f"stockfish not found at {self.path}; install Debian's `stockfish` "
                            "package or set `[env] stockfish_path`") from None
        try:
            eng.configure({"Threads": 1, "Hash": self.hash_mb})
        except Exception:
            _close_engines([eng])
            raise
        self._engines[slot] = eng
        return eng

    def _engine(self, slot: int) -> chess.engine.SimpleEngine:
        if self._closed:
            raise RuntimeError("the Stockfish pool is closed")
        eng = self._engines[slot]
        return eng if eng is not None else self._start(slot)

    def _restart(self, slot: int) -> None:
        eng = self._engines[slot]
        self._engines[slot] = None
        if eng is not None:
            _close_engines([eng])
        with self._stats_lock:
            self.restarts += 1

    def pids(self) -> list[int]:
        """Process ids of the running engines (started lazily, so possibly fewer than ``engines``)."""
        return [p for p in (_pid(e) for e in self._engines if e is not None) if p is not None]

    def start_all(self) -> None:
        """Start every engine now instead of on first use."""
        for slot in range(self.n_engines):
            if self._engines[slot] is None:
                self._start(slot)

    def close(self) -> None:
        """End every engine process; idempotent."""
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._finalizer()

    # --- running searches --------------------------------------------------------------
    def _with_engine(self, describe: str, call: Callable[[chess.engine.SimpleEngine], T]) -> T:
        """Run ``call`` on a free engine with a watchdog; restart and retry on failure."""
        slot = self._free.get()
        try:
            last: BaseException | None = None
            for _attempt in range(self.retries + 1):
                try:
                    eng = self._engine(slot)  # (re)starting can fail too: that is retried
                except _ENGINE_ERRORS as exc:
                    last = exc
                    self._restart(slot)
                    continue
                # A hung search has no timeout in python-chess when the limit has no time, so
                # a watchdog kills the process; the call then fails and is retried.
                watchdog = threading.Timer(self.timeout, _kill_quietly, args=(_pid(eng),))
                watchdog.daemon = True
                watchdog.start()
                t0 = time.perf_counter()
                try:
                    result = call(eng)
                except _ENGINE_ERRORS as exc:
                    last = exc
                    self._restart(slot)
                    continue
                finally:
                    watchdog.cancel()
                    with self._stats_lock:
                        self.engine_busy_seconds += time.perf_counter() - t0
                return result
            raise EngineFailure(f"stockfish failed on {describe} after {self.retries + 1} attempts "
                                f"(restarted each time): {type(last).__name__}: {last}")
        finally:
            self._free.put(slot)

    def _map(self, fn: Callable[[T], object], items: Sequence[T]) -> list:
        """``fn`` over ``items`` on the pool's threads; the first failure is raised after all finish."""
        if len(items) == 1 or self.n_engines == 1:
            return [fn(x) for x in items]
        if self._executor is None:
            self._executor = cf.ThreadPoolExecutor(self.n_engines, thread_name_prefix="stockfish")
        futures = [self._executor.submit(fn, x) for x in items]
        cf.wait(futures)
        return [f.result() for f in futures]

    def _analyse_value(self, board: chess.Board) -> float:
        def call(eng: chess.engine.SimpleEngine) -> float:
            # game=object() forces ucinewgame: a cleared hash makes the score reproducible.
            info = eng.analyse(board, self.limit, game=object(), info=chess.engine.INFO_SCORE)
            score = info.get("score")
            if score is None:
                raise chess.engine.EngineError(f"no score in engine output {info!r}")
            return score_to_value(score.relative, self.value_scale)

        return self._with_engine(f"evaluating '{board.fen()}'", call)

    def values(self, boards: Sequence[chess.Board], keys: Sequence[str] | None = None) -> np.ndarray:
        """float32 [n] side-to-move values of non-terminal ``boards`` (cache keyed by ``keys``,
        default ``board.epd()``: the position without move counters)."""
        t0 = time.perf_counter()
        keys = list(keys) if keys is not None else [b.epd() for b in boards]
        out = np.empty(len(boards), dtype=np.float32)
        todo: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                out[i] = cached
            elif key in todo:  # a repeat within the batch is searched once: a hit
                self.hits += 1
                todo[key].append(i)
            else:
                self.misses += 1
                todo[key] = [i]
        if todo:
            # Positions only: no move stack, so the score is a function of the cache key.
            roots = [boards[rows[0]].copy(stack=False) for rows in todo.values()]
            results = self._map(self._analyse_value, roots)
            self.evaluations += len(roots)
            for (key, rows), value in zip(todo.items(), results):
                out[rows] = value
                if self.cache_size > 0:
                    self._cache[key] = value
                    if len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        self.engine_seconds += time.perf_counter() - t0
        return out

    def best_moves(self, boards: Sequence[chess.Board], depth: int, skill: int | None = None) -> list[chess.Move]:
        """Stockfish's move at ``depth`` in each non-terminal board (``skill``: UCI Skill Level 0-20)."""
        t0 = time.perf_counter()
        limit = chess.engine.Limit(depth=depth)
        options = {} if skill is None or skill >= 20 else {"Skill Level": skill}

        def one(board: chess.Board) -> chess.Move:
            def call(eng: chess.engine.SimpleEngine) -> chess.Move:
                move = eng.play(board, limit, game=object(), options=options).move
                if move is None or not board.is_legal(move):
                    raise chess.engine.EngineError(f"engine returned no legal move ({move})")
                return move

            return self._with_engine(f"choosing a move in '{board.fen()}'", call)

        moves = self._map(one, [b.copy(stack=False) for b in boards])
        self.engine_seconds += time.perf_counter() - t0
        return moves

    def play_moves(self, boards: Sequence[chess.Board], limit: chess.engine.Limit,
                   options: dict | None = None) -> list[chess.Move]:
        """The engine's move in each non-terminal board under ``limit`` with UCI ``options``
        (e.g. ``{"Skill Level": 0}`` or ``{"UCI_LimitStrength": True, "UCI_Elo": 1500}``;
        python-chess restores the previous options after each search). A board that fails
        after every retry raises :class:`EngineFailure` whose ``index`` is its position in
        ``boards``."""
        t0 = time.perf_counter()
        opts = dict(options or {})

        def one(item: tuple[int, chess.Board]) -> chess.Move:
            k, board = item

            def call(eng: chess.engine.SimpleEngine) -> chess.Move:
                move = eng.play(board, limit, game=object(), options=opts).move
                if move is None or not board.is_legal(move):
                    raise chess.engine.EngineError(f"engine returned no legal move ({move})")
                return move

            try:
                return self._with_engine(f"choosing a move in '{board.fen()}'", call)
            except EngineFailure as exc:
                exc.index = k  # type: ignore[attr-defined]
                raise

        moves = self._map(one, [(k, b.copy(stack=False)) for k, b in enumerate(boards)])
        with self._stats_lock:
            self.searches += len(boards)
        self.engine_seconds += time.perf_counter() - t0
        return moves

    def analyse_multipv(self, boards: Sequence[chess.Board], limit: chess.engine.Limit,
                        multipv: int) -> list[list[tuple[chess.Move, int]]]:
        """The engine's ``multipv`` best moves in each non-terminal board, best first, each
        with its side-to-move score in centipawns (mates as +-(100000 - plies to mate)).
        Searches start from a cleared hash; a failure raises :class:`EngineFailure`."""
        t0 = time.perf_counter()

        def one(board: chess.Board) -> list[tuple[chess.Move, int]]:
            def call(eng: chess.engine.SimpleEngine) -> list[tuple[chess.Move, int]]:
                infos = eng.analyse(board, limit, multipv=multipv, game=object(),
                                    info=chess.engine.INFO_SCORE | chess.engine.INFO_PV)
                out = []
                for info in infos:
                    pv, score = info.get("pv"), info.get("score")
                    if not pv or score is None:
                        continue
                    out.append((pv[0], int(score.relative.score(mate_score=100_000))))
                if not out:
                    raise chess.engine.EngineError(f"no principal variation in engine output {infos!r}")
                return out

            return self._with_engine(f"analysing '{board.fen()}'", call)

        result = self._map(one, [b.copy(stack=False) for b in boards])
        with self._stats_lock:
            self.searches += len(boards)
        self.engine_seconds += time.perf_counter() - t0
        return result

    def stats(self) -> dict[str, float]:
        """Cache and engine counters since construction."""
        looked = self.hits + self.misses
        return {"hits": self.hits, "misses": self.misses,
                "hit_rate": self.hits / looked if looked else 0.0,
                "evaluations": self.evaluations, "restarts": self.restarts,
                "cache_entries": len(self._cache), "engine_seconds": self.engine_seconds,
                "engine_busy_seconds": self.engine_busy_seconds}


def _kill_quietly(pid: int | None) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
