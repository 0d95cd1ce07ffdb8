"""``chessrl uci CHECKPOINT``: a chess checkpoint as a UCI engine (docs/chess.md#uci-engine).

The engine answers ``uci`` at once and loads the policy in the background (torch's import
takes seconds; GUIs wait a few for ``uciok``); ``isready`` and ``go`` wait for the load. The
policy needs no search, so ``go`` with any limits answers ``bestmove`` at once; ``go infinite``
and ``go ponder`` hold the move until ``stop`` (or ``ponderhit``), as the protocol asks.
Options: ``Mode`` (greedy: the most likely move; sampled: a move drawn at ``Temperature``),
``Temperature``, ``Seed`` (of the sampling generator, reset by ``ucinewgame``). Bad input is
answered with an ``info string`` line and ignored, never with a crash.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import chess

from chessrl.errors import UserError

OPTIONS = (
    "option name Mode type combo default greedy var greedy var sampled",
    "option name Temperature type string default 1.0",
    "option name Seed type spin default 0 min 0 max 2147483647",
)


def _stdin_lines(q: queue.Queue) -> None:
    """Feed ``q`` with stdin's lines, then None at its end. Reads the file descriptor itself:
    a thread blocked in ``sys.stdin`` would hold its lock at interpreter shutdown."""
    buf = b""
    while True:
        try:
            chunk = os.read(0, 4096)
        except OSError:
            chunk = b""
        if not chunk:
            if buf:
                q.put(("line", buf.decode(errors="replace")))
            q.put(("eof", None))
            return
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            q.put(("line", line.decode(errors="replace")))


class UciEngine:
    """The protocol over a loaded player; :meth:`serve` runs it until ``quit`` or end of input."""

    def __init__(self, checkpoint: str | Path, out: TextIO = sys.stdout):
        from chessrl.player import label, resolve

        self.path = resolve(checkpoint)  # a missing file is an error before the first line
        self.name = f"chessrl {label(self.path)}"
        self.out = out
        self.events: queue.Queue = queue.Queue()
        self.loaded = threading.Event()
        self.player: Any = None
        self.error: BaseException | None = None
        self.board = chess.Board()
        self.greedy, self.temperature, self.seed = True, 1.0, 0
        self.generator: Any = None
        self.pending: str | None = None  # a bestmove held back by go infinite / go ponder
        threading.Thread(target=self._load, daemon=True).start()

    def _load(self) -> None:
        try:
            from chessrl import checkpoint as ckpt_io
            from chessrl.player import game_name, player_from_state

            state = ckpt_io.load(self.path)
            if game_name(state) != "chess":
                raise UserError(
                    f"{self.path}: a checkpoint of game '{game_name(state)}'; "
                    "chessrl uci plays chess "
                    f"(chessrl play {self.path} plays any game in the terminal)"
                )
            # the engine needs no reward engine and no start positions: only the policy
            self.player = player_from_state(
                self.path, state, env={"reward": "none", "start": "standard", "benchmark": False}
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which reports it
            self.error = exc
            self.events.put(("failed", exc))
        self.loaded.set()

    def _ready(self) -> None:
        self.loaded.wait()
        if self.error is not None:
            raise self.error

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def serve(self) -> int:
        threading.Thread(target=_stdin_lines, args=(self.events,), daemon=True).start()
        try:
            while True:
                kind, item = self.events.get()
                if kind == "failed":
                    raise item
                if kind == "eof" or not self.handle(item):
                    # input ended before any command needed the checkpoint: a checkpoint that
                    # failed to load is still the user's to hear about (one line, exit 2)
                    self._ready()
                    return 0
        finally:
            # a quit before the checkpoint finished loading: let the loader leave torch first
            # (an interpreter torn down under a thread inside torch can abort the process)
            self.loaded.wait(timeout=60)
            if self.player is not None:
                self.player.close()

    # --- commands ------------------------------------------------------------------------
    def handle(self, line: str) -> bool:
        """Answer one command line; False after ``quit``."""
        words = line.split()
        if not words:
            return True
        cmd, rest = words[0], words[1:]
        if cmd == "quit":
            return False
        if cmd == "uci":
            self.say(f"id name {self.name}")
            self.say("id author chessrl")
            for option in OPTIONS:
                self.say(option)
            self.say("uciok")
        elif cmd == "isready":
            self._ready()
            self.say("readyok")
        elif cmd == "ucinewgame":
            self.board = chess.Board()
            self.generator = None  # the next search starts a fresh generator from Seed
            self.pending = None
        elif cmd == "setoption":
            self.set_option(rest)
        elif cmd == "position":
            self.set_position(rest)
        elif cmd == "go":
            move = self.best_move()
            if "infinite" in rest or "ponder" in rest:
                self.pending = move
            else:
                self.say(f"bestmove {move}")
        elif cmd in ("stop", "ponderhit"):
            if self.pending is not None:
                self.say(f"bestmove {self.pending}")
                self.pending = None
        elif cmd not in ("debug", "register"):
            self.say(f"info string unknown command '{cmd}' ignored")
        return True

    def set_option(self, words: list[str]) -> None:
        """``setoption name <Name> [value <v>]``; a bad name or value is reported and ignored."""
        text = " ".join(words)
        name, _, value = text.partition(" value ")
        name = name.removeprefix("name ").strip().lower()
        value = value.strip()
        if name == "mode" and value.lower() in ("greedy", "sampled"):
            self.greedy = value.lower() == "greedy"
        elif name == "temperature" and _positive_float(value):
            self.temperature = float(value)
        elif name == "seed" and value.isdigit():
            self.seed, self.generator = int(value), None
        elif name in ("mode", "temperature", "seed"):
            self.say(
                f"info string option {name}: bad value '{value}' ignored (Mode greedy|sampled, "
                "Temperature a number > 0, Seed an integer >= 0)"
            )
        else:
            self.say(f"info string unknown option '{name}' ignored")

    def set_position(self, words: list[str]) -> None:
        """``position startpos|fen FEN [moves m1 m2 ...]``; a bad one is reported and leaves
        no position (``go`` then answers ``bestmove 0000``)."""
        try:
            moves_at = words.index("moves") if "moves" in words else len(words)
            if words[:1] == ["startpos"]:
                board = chess.Board()
            elif words[:1] == ["fen"]:
                board = chess.Board(" ".join(words[1:moves_at]))
                if not board.is_valid():  # adjacent kings, the side not to move in check, ...
                    raise ValueError(f"not a legal position ({board.status()!r})")
            else:
                raise ValueError("expected 'startpos' or 'fen FEN'")
            for uci in words[moves_at + 1 :]:
                board.push_uci(uci)
            self.board = board
        except ValueError as exc:
            self.board = None
            self.say(f"info string bad position '{' '.join(words)}': {exc}")

    def best_move(self) -> str:
        """The policy's move in the current position in UCI notation; ``0000`` without one."""
        self._ready()
        # 0000 only without a legal move: a position drawn by rule (insufficient material, 75
        # moves, fivefold repetition) still has moves, and a GUI that asks gets one
        if self.board is None or not any(self.board.generate_legal_moves()):
            return "0000"
        import torch

        from chessrl.envs.chess import encoding as enc
        from chessrl.envs.chess.game import ChessState
        from chessrl.policy import log_probs, sample

        game = self.player.game
        obs = game.observe([ChessState(self.board.copy())])
        with torch.no_grad():
            lp = log_probs(
                self.player.policy,
                torch.as_tensor(obs.tokens),
                torch.as_tensor(obs.action_mask),
                self.temperature,
            )
        if self.greedy:
            action = int(lp.argmax(-1))
        else:
            if self.generator is None:
                self.generator = torch.Generator().manual_seed(self.seed)
            action = int(sample(lp, self.generator))
        move = enc.action_to_move(action, self.board.turn)
        self.say(
            f"info string {'greedy' if self.greedy else 'sampled'} move, policy probability "
            f"{float(lp[0, action].exp()):.3f}"
        )
        return move.uci()


def _positive_float(text: str) -> bool:
    try:
        return float(text) > 0 and float(text) != float("inf")
    except ValueError:
        return False


def cmd_uci(args: Any) -> int:
    return UciEngine(args.checkpoint).serve()
