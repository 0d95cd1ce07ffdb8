"""A pool of Stockfish processes that scores positions and picks moves, with a cache.

What the pool promises:

* ``values(boards)`` is the engine's score of each (non-terminal) board for the side to move
  in [-1, 1] (:func:`score_to_value`: centipawns through a logistic capped at
  :data:`CP_CAP`, mates above it, shorter mates worth more). The move stack is never sent.
  With ``fresh = True`` (the default) every search starts from a cleared hash and history
  (``ucinewgame``), so a depth- or node-pinned score is a function of the position alone,
  whichever engine computes it and in whatever order. With ``fresh = False`` searches reuse
  the engine's hash (about 30% faster at depth 8); the score may then depend on what that
  engine searched before, and a position keeps the first value computed for it in the run for
  as long as it stays in the cache (``cache_size`` entries; docs/chess.md).
* The driver speaks UCI over raw pipes, with no per-search event loop: one thread of the
  caller multiplexes every engine with ``select`` and keeps each engine's pipe one search
  ahead, so an engine never waits on Python between searches. Repeated positions in a batch
  are searched once; the cache (keyed by position, per pool, so per reward setting) lives
  across calls.
* A failed search (the process died, hung past ``timeout`` seconds, or answered garbage) is
  retried on a restarted engine; after ``retries`` retries it raises :class:`EngineFailure`.
  A failure is never cached and never turned into a 0.
* Every process is ended by :meth:`close`, by garbage collection of the pool, and at
  interpreter exit, including when the program raises. Engines run in their own session, so a
  Ctrl-C in the terminal reaches the trainer, not them; they quit on their own when the
  trainer dies (their stdin closes).
"""

from __future__ import annotations

import math
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import chess
import chess.engine
import numpy as np

from chessrl.errors import EngineFailure as CoreEngineFailure
from chessrl.errors import UserError

CP_CAP = 0.9  # centipawn values lie in (-CP_CAP, CP_CAP); mates lie above it
MATE_DECAY = 0.8  # |value| of "mate in n" = CP_CAP + (1 - CP_CAP) * MATE_DECAY**n


class EngineFailure(CoreEngineFailure):
    """Stockfish could not produce a result even after restarts and retries (the core's
    :class:`chessrl.errors.EngineFailure`: a run reports it as one line and exits 1)."""


class _EngineError(Exception):
    """One engine misbehaved (died, hung, garbage): restart it and retry the search."""


def check_stockfish(path: str) -> str:
    """The executable ``path`` resolves to; :class:`UserError` when there is none."""
    found = shutil.which(path)
    if found is None or not os.access(found, os.X_OK):
        raise UserError(
            f"stockfish not found at {path}; install Debian's `stockfish` package "
            "or set `[env] stockfish_path`"
        )
    return found


def mate_value(moves: int) -> float:
    """Value of "the side to move mates in ``moves``" (negative: is mated in ``-moves``);
    0 moves is a mate on the board (-1). Shorter mates are worth more, all above any cp value."""
    if moves == 0:
        return -1.0
    return math.copysign(CP_CAP + (1.0 - CP_CAP) * MATE_DECAY ** abs(moves), moves)


def cp_value(cp: float, value_scale: float) -> float:
    """Centipawns for the side to move mapped into (-CP_CAP, CP_CAP) by a logistic."""
    return CP_CAP * (2.0 / (1.0 + math.exp(-max(-1e4, min(1e4, cp)) / value_scale)) - 1.0)


def score_to_value(score: chess.engine.Score, value_scale: float) -> float:
    """A side-to-move score mapped to [-1, 1]: see :func:`cp_value` and :func:`mate_value`."""
    mate = score.mate()
    if mate is not None:
        return mate_value(mate)
    cp = score.score()
    assert cp is not None
    return cp_value(cp, value_scale)


# --- parsing engine output ------------------------------------------------------------------
def _score_tokens(tokens: list[bytes]) -> tuple[str, int] | None:
    """("cp"|"mate", n) from the tokens of an ``info`` line, or None."""
    try:
        i = tokens.index(b"score")
        return tokens[i + 1].decode(), int(tokens[i + 2])
    except (ValueError, IndexError):
        return None


def _last_score(lines: list[bytes]) -> tuple[str, int]:
    for line in reversed(lines):
        if line.startswith(b"info") and b" score " in line and b"bound" not in line:
            found = _score_tokens(line.split())
            if found is not None:
                return found
    raise _EngineError(f"no score in engine output {lines[-3:]!r}")


def _bestmove(lines: list[bytes]) -> chess.Move:
    for line in reversed(lines):
        if line.startswith(b"bestmove"):
            parts = line.split()
            if len(parts) < 2 or parts[1] == b"(none)":
                break
            try:
                return chess.Move.from_uci(parts[1].decode())
            except ValueError:
                break
    raise _EngineError(f"no move in engine output {lines[-3:]!r}")


_KEEP = (b"info", b"Final evaluation")  # the output lines a job's parser reads
_NAP = 0.5  # the driver's nap between reads, as a fraction of one search (StockfishPool._run)


# --- one engine process -------------------------------------------------------------------
@dataclass
class _Job:
    index: int
    commands: bytes
    until: bytes  # the first token of the line that ends this job's output
    parse: Callable[[list[bytes]], Any]
    options: tuple = ()  # UCI options this job needs, as sorted (name, value) pairs
    describe: str = ""
    attempts: int = 0
    lines: list[bytes] = field(default_factory=list)


class _Engine:
    """One Stockfish process on raw pipes: a FIFO of jobs in flight and the options it holds."""

    def __init__(self, path: str, hash_mb: int, timeout: float):
        self.proc = subprocess.Popen(
            [path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
            start_new_session=True,
        )
        self.fd = self.proc.stdout.fileno()
        self.buf = b""
        self.inflight: deque[_Job] = deque()
        self.options: tuple = ()
        self.defaults: dict[str, str] = {}
        self.busy_since = 0.0
        try:
            self._handshake(hash_mb, timeout)
        except BaseException:
            self.kill()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _handshake(self, hash_mb: int, timeout: float) -> None:
        self.write(b"uci\n")
        for line in self._read_until(b"uciok", timeout):
            parts = line.decode(errors="replace").split()
            if parts[:2] == ["option", "name"] and "default" in parts:
                name = " ".join(parts[2 : parts.index("type")])
                d = parts.index("default")
                self.defaults[name] = " ".join(parts[d + 1 : d + 2])
        self.write(
            (
                f"setoption name Threads value 1\nsetoption name Hash value {hash_mb}\nisready\n"
            ).encode()
        )
        self._read_until(b"readyok", timeout)

    def _read_until(self, token: bytes, timeout: float) -> list[bytes]:
        deadline = time.monotonic() + timeout
        lines: list[bytes] = []
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                line = line.strip()
                lines.append(line)
                if line.startswith(token):
                    return lines
            left = deadline - time.monotonic()
            if left <= 0:
                raise _EngineError(f"no '{token.decode()}' within {timeout:g} s")
            sel = selectors.DefaultSelector()
            sel.register(self.fd, selectors.EVENT_READ)
            ready = sel.select(left)
            sel.close()
            if ready:
                chunk = os.read(self.fd, 1 << 16)
                if not chunk:
                    raise _EngineError("the engine exited (not a UCI engine?)")
                self.buf += chunk

    def write(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise _EngineError(f"cannot write to the engine: {exc}") from None

    def send(self, job: _Job) -> None:
        """Queue ``job`` on this engine (after its options are set)."""
        if job.options != self.options:
            wanted = dict(job.options)
            cmds = [
                f"setoption name {k} value {v}"
                for k, v in wanted.items()
                if (k, v) not in self.options
            ]
            cmds += [
                f"setoption name {k} value {self.defaults.get(k, '')}"
                for k, _ in self.options
                if k not in wanted
            ]
            self.write(("\n".join(cmds) + "\n").encode())
            self.options = job.options
        if not self.inflight:
            self.busy_since = time.perf_counter()
        job.lines = []
        self.write(job.commands)
        self.inflight.append(job)

    def kill(self) -> None:
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - stuck in the kernel
            pass

    def quit(self) -> None:
        try:
            self.proc.stdin.write(b"quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=1.0)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:
            self.kill()
        else:
            try:
                self.proc.stdout.close()
            except OSError:
                pass


def _close_engines(engines: list[_Engine | None]) -> None:
    """End every process in ``engines``; safe to call twice."""
    for i, eng in enumerate(engines):
        if eng is not None:
            engines[i] = None
            eng.quit()


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process, read from /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in (b"Z", b"X")


_LIVE_POOLS: "weakref.WeakSet[StockfishPool]" = weakref.WeakSet()


def _close_all_pools() -> None:
    """Close every pool still open; runs when the interpreter shuts down."""
    for pool in list(_LIVE_POOLS):
        pool.close()


try:  # before non-daemon threads are joined at exit (the hook concurrent.futures uses)
    threading._register_atexit(_close_all_pools)  # type: ignore[attr-defined]
except (AttributeError, RuntimeError):  # pragma: no cover - other interpreters
    import atexit

    atexit.register(_close_all_pools)


def _fen(board: chess.Board) -> str:
    return board.fen(en_passant="fen")


def _fen_and_key(board: chess.Board) -> tuple[str, str]:
    """(the FEN sent to the engine, ``board.epd()``) from one FEN: the EPD is the FEN without
    its move counters unless the FEN names an en-passant square (set after any double pawn
    push, where the EPD names it only if a capture there is legal)."""
    fen = _fen(board)
    fields = fen.split(" ")
    return fen, (" ".join(fields[:4]) if fields[3] == "-" else board.epd())


CLOCK_EXACT = 50  # from this halfmove clock on, a value search sees (and is keyed by) the clock


def _value_fen_and_key(board: chess.Board) -> tuple[str, str]:
    """(the FEN a value search is sent, its cache key), the FEN a function of the key alone, so
    a value never depends on which of a key's boards was searched first.

    The key is ``board.epd()``: a position seen again with other move counters (a transposition,
    a repetition) is a cache hit, and the search gets that EPD with a zero halfmove clock (the
    engine's evaluation shrinks with the clock, so sending each board's own clock would make the
    cached value depend on search order). Only from ``CLOCK_EXACT`` on, where the fifty-move
    rule is within reach of a search, the clock is sent and added to the key.
    """
    key = _fen_and_key(board)[1]
    clock = board.halfmove_clock
    if clock < CLOCK_EXACT:
        return f"{key} 0 1", key
    return f"{key} {clock} 1", f"{key} hmvc {clock}"


def _refuse_finished(boards: Sequence[chess.Board]) -> None:
    """ValueError naming the first board without a legal move: the engine answers those with
    ``bestmove (none)``, which is no failure to restart engines and retry for."""
    for board in boards:
        if not any(board.generate_legal_moves()):
            raise ValueError(
                f"no legal move in '{board.fen()}' (the game is over): the engine chooses moves "
                "only in positions with a move to play"
            )


class StockfishPool:
    """``engines`` Stockfish processes scoring positions at a pinned strength; see the module doc.

    Exactly one of ``depth``, ``nodes`` or ``static`` pins the reward: a depth- or node-limited
    search, or Stockfish's static evaluation (the ``eval`` command: NNUE, no search; a position
    in check, which has none, gets a depth-1 search).
    """

    def __init__(
        self,
        path: str,
        engines: int = 2,
        hash_mb: int = 16,
        *,
        depth: int | None = None,
        nodes: int | None = None,
        static: bool = False,
        cache_size: int = 100_000,
        value_scale: float = 271.6,
        retries: int = 2,
        timeout: float = 60.0,
        fresh: bool = True,
        ahead: int = 2,
    ):
        if sum((depth is not None, nodes is not None, bool(static))) != 1:
            raise ValueError("pin the engine strength with exactly one of depth, nodes or static")
        self.path = check_stockfish(path)
        self.n_engines = engines
        self.hash_mb = hash_mb
        self.static = bool(static)
        self.limit = (
            chess.engine.Limit(depth=depth)
            if depth is not None
            else chess.engine.Limit(nodes=nodes)
            if nodes is not None
            else chess.engine.Limit(depth=1)
        )
        self._go = (
            f"go depth {depth}"
            if depth is not None
            else f"go nodes {nodes}"
            if nodes is not None
            else "go depth 1"
        ).encode()
        self.cache_size = cache_size
        self.value_scale = value_scale
        self.retries = retries
        self.timeout = timeout
        self.fresh = fresh
        self.ahead = max(1, ahead)
        # the running mean of one search's duration on a busy engine: the driver naps a fraction
        # of it between reads, so it wakes about once per search instead of once per info line
        self._search_seconds = 0.0
        self._cache: OrderedDict[str, float] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evaluations = 0
        self.restarts = 0
        self.restart_reasons: list[str] = []
        self.searches = 0  # play_moves / analyse_multipv searches requested
        self.engine_seconds = 0.0  # wall time callers spent waiting on the pool
        self.engine_busy_seconds = 0.0  # summed time engines had a search in flight
        self._lock = threading.RLock()
        self._engines: list[_Engine | None] = [None] * engines
        self._closed = False
        # Runs on close(), on garbage collection and at interpreter exit; holds no reference
        # to self, only to the engine list, so it cannot keep the pool alive.
        self._finalizer = weakref.finalize(self, _close_engines, self._engines)
        _LIVE_POOLS.add(self)

    # --- process management ------------------------------------------------------------
    def _start(self, slot: int) -> _Engine:
        if self._closed:
            raise RuntimeError("the Stockfish pool is closed")
        try:
            eng = _Engine(self.path, self.hash_mb, self.timeout)
        except (FileNotFoundError, PermissionError):
            raise UserError(
                f"stockfish not found at {self.path}; install Debian's `stockfish` "
                "package or set `[env] stockfish_path`"
            ) from None
        except OSError as exc:
            raise _EngineError(f"cannot start {self.path}: {exc}") from None
        self._engines[slot] = eng
        return eng

    def _restart(self, slot: int, why: str) -> None:
        eng = self._engines[slot]
        self._engines[slot] = None
        if eng is not None:
            eng.kill()
        self.restarts += 1
        self.restart_reasons.append(why)

    def pids(self) -> list[int]:
        """Process ids of the running engines (started lazily, so possibly fewer than
        ``engines``)."""
        return [e.pid for e in self._engines if e is not None]

    def start_all(self) -> None:
        """Start every engine now instead of on first use."""
        with self._lock:
            for slot in range(self.n_engines):
                if self._engines[slot] is None:
                    self._start(slot)

    def close(self) -> None:
        """End every engine process; idempotent."""
        self._closed = True
        self._finalizer()

    # --- the scheduler ------------------------------------------------------------------
    def _run(self, jobs: list[_Job]) -> list[Any]:
        """Run ``jobs`` across the engines; results in job order. A job whose engine fails is
        retried on a restarted engine; past ``retries`` the first such failure is raised once
        every other job in flight has finished."""
        results: list[Any] = [None] * len(jobs)
        if not jobs:
            return results
        with self._lock:
            todo = deque(jobs)
            failure: EngineFailure | None = None
            sel = selectors.DefaultSelector()
            registered: dict[int, int] = {}  # fd -> slot
            last_progress = [time.monotonic()] * self.n_engines
            busy = 0.0
            # set when a failure gives jobs back or leaves a slot without an engine: only then
            # can an idle engine have work it would not be fed when its own search ends
            refeed = False

            def fail(slot: int, why: str) -> None:
                nonlocal failure, refeed
                refeed = True
                eng = self._engines[slot]
                lost = list(eng.inflight) if eng is not None else []
                if eng is not None and eng.fd in registered:
                    sel.unregister(eng.fd)
                    del registered[eng.fd]
                self._restart(slot, why)
                for job in reversed(lost):
                    job.attempts += 1
                    if job.attempts > self.retries:
                        if failure is None:
                            failure = EngineFailure(
                                f"stockfish failed on {job.describe} after {job.attempts} "
                                f"attempts (restarted each time): {why}"
                            )
                            failure.index = job.index  # type: ignore[attr-defined]
                    else:
                        todo.appendleft(job)

            def feed(slot: int) -> None:
                nonlocal failure, refeed
                while todo and failure is None:
                    eng = self._engines[slot]
                    job = todo[0]
                    if (
                        eng is not None
                        and eng.inflight
                        and (
                            len(eng.inflight) >= self.ahead
                            or job.options != eng.options
                            or job.until != eng.inflight[-1].until
                        )
                    ):
                        return
                    if eng is None:
                        try:
                            eng = self._start(slot)
                        except _EngineError as exc:
                            todo.popleft()
                            refeed = True
                            job.attempts += 1
                            self.restarts += 1
                            self.restart_reasons.append(str(exc))
                            if job.attempts > self.retries:
                                failure = EngineFailure(
                                    f"stockfish failed on {job.describe} after "
                                    f"{job.attempts} attempts (restarted each time): {exc}"
                                )
                                failure.index = job.index  # type: ignore[attr-defined]
                            else:
                                todo.appendleft(job)
                            continue
                        last_progress[slot] = time.monotonic()
                    if eng.fd not in registered:
                        sel.register(eng.fd, selectors.EVENT_READ, slot)
                        registered[eng.fd] = slot
                    todo.popleft()
                    try:
                        eng.send(job)
                    except _EngineError as exc:
                        if job not in eng.inflight:
                            eng.inflight.append(job)
                        fail(slot, str(exc))

            # the timeouts are checked every `tick` seconds, not at every wake-up: a wake-up
            # costs O(lines read), not O(engines)
            tick = min(0.1, self.timeout)
            try:
                for slot in range(self.n_engines):
                    feed(slot)
                next_check = time.monotonic() + tick
                while any(e is not None and e.inflight for e in self._engines):
                    for key, _ in sel.select(tick):
                        slot = key.data
                        eng = self._engines[slot]
                        try:
                            chunk = os.read(eng.fd, 1 << 16)
                        except OSError:
                            chunk = b""
                        if not chunk:
                            fail(slot, "the engine process died")
                            feed(slot)
                            continue
                        data = eng.buf + chunk
                        end = data.rfind(b"\n")
                        if end < 0 or not eng.inflight:
                            eng.buf = data  # no whole line yet, or no job to give it to
                            continue
                        eng.buf = data[end + 1 :]
                        lines = data[:end].split(b"\n")
                        for i, line in enumerate(lines):
                            if not eng.inflight:  # output with no job waiting: the next job's
                                eng.buf = b"\n".join(lines[i:]) + b"\n" + eng.buf
                                break
                            job = eng.inflight[0]
                            line = line.strip()
                            done = line.startswith(job.until)
                            if done or line.startswith(_KEEP):
                                job.lines.append(line)
                            if done:
                                eng.inflight.popleft()
                                now = time.monotonic()
                                if eng.inflight:  # busy since the last answer: one search
                                    took = now - last_progress[slot]
                                    self._search_seconds += 0.05 * (took - self._search_seconds)
                                last_progress[slot] = now
                                try:
                                    results[job.index] = job.parse(job.lines)
                                except _EngineError as exc:
                                    eng.inflight.appendleft(job)
                                    fail(slot, str(exc))
                                    break
                                job.lines = []
                                if not eng.inflight:
                                    busy += time.perf_counter() - eng.busy_since
                        feed(slot)
                    now = time.monotonic()
                    if now >= next_check:
                        next_check = now + tick
                        for slot, eng in enumerate(self._engines):
                            if (
                                eng is not None
                                and eng.inflight
                                and now - last_progress[slot] > self.timeout
                            ):
                                fail(slot, f"no answer within {self.timeout:g} s (engine killed)")
                                feed(slot)
                    if refeed and todo and failure is None:
                        # an idle engine takes what a failed one gave back
                        refeed = False
                        for slot in range(self.n_engines):
                            feed(slot)
                    # nap only when each busy engine has its next search queued (or there is
                    # nothing left to queue), and not for short searches: there a nap costs
                    # more than the wake-ups it saves
                    nap = min(_NAP * self._search_seconds, 0.002)
                    if (
                        self._search_seconds >= 0.0015
                        and nap > 0
                        and (
                            not todo
                            or all(
                                len(e.inflight) >= 2
                                for e in self._engines
                                if e is not None and e.inflight
                            )
                        )
                    ):
                        time.sleep(nap)
            finally:
                sel.close()
                self.engine_busy_seconds += busy
            if failure is not None:
                raise failure
            return results

    # --- jobs ----------------------------------------------------------------------------
    def _prefix(self) -> bytes:
        return b"ucinewgame\n" if self.fresh else b""

    def _value_job(self, index: int, board: chess.Board, fen: str | None = None) -> _Job:
        fen = fen or _fen(board)
        scale = self.value_scale
        if self.static and not board.is_check():
            white = board.turn == chess.WHITE

            def parse_static(lines: list[bytes]) -> float:
                for line in lines:
                    if line.startswith(b"Final evaluation"):
                        tok = line.split()[2]
                        pawns = float(tok)
                        return cp_value(100.0 * pawns if white else -100.0 * pawns, scale)
                raise _EngineError(f"no static evaluation in engine output {lines[-3:]!r}")

            return _Job(
                index,
                f"position fen {fen}\neval\nisready\n".encode(),
                b"readyok",
                parse_static,
                describe=f"evaluating '{fen}'",
            )

        def parse(lines: list[bytes]) -> float:
            kind, n = _last_score(lines)
            return mate_value(n) if kind == "mate" else cp_value(n, scale)

        return _Job(
            index,
            self._prefix() + f"position fen {fen}\n".encode() + self._go + b"\n",
            b"bestmove",
            parse,
            describe=f"evaluating '{fen}'",
        )

    def values(
        self, boards: Sequence[chess.Board], keys: Sequence[str] | None = None
    ) -> np.ndarray:
        """float32 [n] side-to-move values of non-terminal ``boards`` (cache keyed by ``keys``,
        default ``board.epd()``: the position without move counters, plus the halfmove clock
        from ``CLOCK_EXACT`` on; see :func:`_value_fen_and_key`)."""
        t0 = time.perf_counter()
        if keys is None:
            fens, keys = map(list, zip(*map(_value_fen_and_key, boards))) if boards else ([], [])
        else:
            fens, keys = [None] * len(boards), list(keys)
        out = np.empty(len(boards), dtype=np.float32)
        todo: dict[str, list[int]] = {}
        with self._lock:
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
                jobs = [
                    self._value_job(k, boards[rows[0]], fens[rows[0]])
                    for k, rows in enumerate(todo.values())
                ]
                results = self._run(jobs)
                self.evaluations += len(jobs)
                for (key, rows), value in zip(todo.items(), results):
                    out[rows] = value
                    if self.cache_size > 0:
                        self._cache[key] = value
                        if len(self._cache) > self.cache_size:
                            self._cache.popitem(last=False)
        self.engine_seconds += time.perf_counter() - t0
        return out

    def _go_command(self, limit: chess.engine.Limit) -> str:
        parts = []
        if limit.depth is not None:
            parts.append(f"depth {limit.depth}")
        if limit.nodes is not None:
            parts.append(f"nodes {limit.nodes}")
        if limit.time is not None:
            parts.append(f"movetime {max(1, int(limit.time * 1000))}")
        if not parts:
            raise ValueError(f"an engine limit needs depth, nodes or time: {limit}")
        return "go " + " ".join(parts)

    def play_moves(
        self,
        boards: Sequence[chess.Board],
        limit: chess.engine.Limit,
        options: dict | None = None,
        fresh: bool = True,
    ) -> list[chess.Move]:
        """The engine's move in each non-terminal board under ``limit`` with UCI ``options``
        (e.g. ``{"Skill Level": 0}`` or ``{"UCI_LimitStrength": True, "UCI_Elo": 1500}``; options
        not given are at their defaults; ``fresh``: each search from a cleared hash, so the move
        is a function of the position). A board that fails after every retry raises
        :class:`EngineFailure` whose ``index`` is its position in ``boards``; a board without a
        legal move is a ``ValueError`` before any search."""
        t0 = time.perf_counter()
        opts = tuple(
            sorted(
                (str(k), str(v).lower() if isinstance(v, bool) else str(v))
                for k, v in (options or {}).items()
            )
        )
        go = self._go_command(limit)
        _refuse_finished(boards)
        jobs = []
        for k, board in enumerate(boards):
            fen = _fen(board)

            def parse(lines: list[bytes], board: chess.Board = board) -> chess.Move:
                move = _bestmove(lines)
                if not board.is_legal(move):
                    raise _EngineError(f"engine returned an illegal move ({move})")
                return move

            jobs.append(
                _Job(
                    k,
                    (b"ucinewgame\n" if fresh else b"") + f"position fen {fen}\n{go}\n".encode(),
                    b"bestmove",
                    parse,
                    options=opts,
                    describe=f"choosing a move in '{fen}'",
                )
            )
        with self._lock:
            moves = self._run(jobs)
            self.searches += len(boards)
        self.engine_seconds += time.perf_counter() - t0
        return moves

    def best_moves(
        self,
        boards: Sequence[chess.Board],
        depth: int,
        skill: int | None = None,
        fresh: bool = True,
    ) -> list[chess.Move]:
        """Stockfish's move at ``depth`` in each non-terminal board (``skill``: UCI Skill Level
        0-20)."""
        options = {} if skill is None or skill >= 20 else {"Skill Level": skill}
        return self.play_moves(boards, chess.engine.Limit(depth=depth), options, fresh=fresh)

    def analyse_multipv(
        self, boards: Sequence[chess.Board], limit: chess.engine.Limit, multipv: int
    ) -> list[list[tuple[chess.Move, int]]]:
        """The engine's ``multipv`` best moves in each non-terminal board, best first, each
        with its side-to-move score in centipawns (mates as +-(100000 - moves to mate)).
        Searches start from a cleared hash; a failure raises :class:`EngineFailure`."""
        t0 = time.perf_counter()
        go = self._go_command(limit)
        opts = (("MultiPV", str(multipv)),) if multipv > 1 else ()
        _refuse_finished(boards)
        jobs = []
        for k, board in enumerate(boards):
            fen = _fen(board)

            def parse(
                lines: list[bytes], board: chess.Board = board
            ) -> list[tuple[chess.Move, int]]:
                best: dict[int, tuple[int, chess.Move, int]] = {}  # multipv -> (depth, move, cp)
                for line in lines:
                    if not line.startswith(b"info") or b" pv " not in line or b"bound" in line:
                        continue
                    tok = line.split()
                    try:
                        d = int(tok[tok.index(b"depth") + 1])
                        k = int(tok[tok.index(b"multipv") + 1]) if b"multipv" in tok else 1
                        move = chess.Move.from_uci(tok[tok.index(b"pv") + 1].decode())
                    except (ValueError, IndexError):
                        continue
                    score = _score_tokens(tok)
                    if score is None:
                        continue
                    kind, n = score
                    cp = (100_000 - n if n > 0 else -100_000 - n) if kind == "mate" else n
                    if k not in best or d >= best[k][0]:
                        best[k] = (d, move, cp)
                top = max((d for d, _, _ in best.values()), default=0)
                out = [
                    (m, cp)
                    for _, (d, m, cp) in sorted(best.items())
                    if d >= top - 1 and board.is_legal(m)
                ]
                if not out:
                    raise _EngineError(f"no principal variation in engine output {lines[-3:]!r}")
                return out

            jobs.append(
                _Job(
                    k,
                    b"ucinewgame\n" + f"position fen {fen}\n{go}\n".encode(),
                    b"bestmove",
                    parse,
                    options=opts,
                    describe=f"analysing '{fen}'",
                )
            )
        with self._lock:
            result = self._run(jobs)
            self.searches += len(boards)
        self.engine_seconds += time.perf_counter() - t0
        return result

    def stats(self) -> dict[str, float]:
        """Cache and engine counters since construction."""
        looked = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / looked if looked else 0.0,
            "evaluations": self.evaluations,
            "restarts": self.restarts,
            "cache_entries": len(self._cache),
            "engine_seconds": self.engine_seconds,
            "engine_busy_seconds": self.engine_busy_seconds,
        }
