"""The ``chessrl`` command line. A user's mistake prints one line and exits with code 2; a run
that cannot go on (it diverged, a disk or an engine failed) one line and code 1; a run stopped
by SIGINT or SIGTERM, after its checkpoint, 130 or 143."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from chessrl import __version__, pluginmanager
from chessrl.errors import (
    Interrupted,
    PluginError,
    RunFailure,
    UserError,
    first_line,
    out_of_memory,
)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment TOML, e.g. examples/clean.toml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable), e.g. --set trainer.lr=3e-6",
    )


def cmd_run(args: argparse.Namespace) -> int:
    from chessrl.config import load_config
    from chessrl.trainer import new_run_dir, train

    cfg = load_config(args.config, args.overrides)
    if args.resume and not args.run_dir:
        raise UserError("--resume needs --run-dir DIR: the run directory to continue")
    if args.max_steps is not None and args.max_steps < 1:
        raise UserError(
            f"--max-steps {args.max_steps}: give the number of steps to run, at least 1"
        )
    if args.allow_change and not args.resume:
        raise UserError("--allow-change works with --resume only: a new run takes any config")
    run_dir = Path(args.run_dir) if args.run_dir else new_run_dir(cfg)
    try:
        train(
            cfg,
            run_dir,
            max_steps=args.max_steps,
            resume=args.resume,
            progress=False if args.no_progress else None,
            allow_change=args.allow_change,
        )
    except Interrupted as exc:
        if exc.run_dir is None:
            raise
        _say(
            f"chessrl: interrupted; resume from the step-{exc.step} checkpoint with: "
            f"{resume_command(args, exc.run_dir)}"
        )
        return exc.exit_code
    if _main_rank():
        print(f"run directory: {run_dir}")
    return 0


def resume_command(args: argparse.Namespace, run_dir: Path) -> str:
    """The shell command that continues ``run_dir``: this command's program, config and
    ``--set`` overrides, with ``--resume --run-dir`` (no ``--max-steps``)."""
    words = [
        "run",
        args.config,
        *[w for o in args.overrides for w in ("--set", o)],
        "--resume",
        "--run-dir",
        str(run_dir),
    ]
    return " ".join([_program()] + [shlex.quote(w) for w in words])


def _sigterm_interrupts() -> Any:
    """SIGTERM ends every command like Ctrl-C does (one line, exit 143) instead of killing it
    silently; ``chessrl run`` installs its own handler, which finishes the step first. Returns
    the handler it replaced (None off the main thread, where none is installed)."""
    import signal
    import threading

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, interrupt)


def _main_rank() -> bool:
    """Whether this process speaks for the run: always, unless it is a rank > 0 under torchrun
    (rank 0 prints the one line; the others stay quiet)."""
    return os.environ.get("RANK", "0") == "0"


def _say(line: str) -> None:
    """A line every rank would print alike (a config mistake, an interruption): rank 0's."""
    if _main_rank():
        print(line, file=sys.stderr)


def _say_own(line: str) -> None:
    """A line about this process's own failure: every rank prints it, a rank > 0 names itself
    (its failure may be the cause of the others')."""
    rank = os.environ.get("RANK", "0")
    print(
        line
        if rank == "0"
        else line.replace("chessrl: error:", f"chessrl: error (rank {rank}):", 1),
        file=sys.stderr,
    )


def _program() -> str:
    """How this process was started, as a user would type it again: ``chessrl`` when that is
    the one on PATH, else the script's path, or ``PYTHON -m chessrl``; under torchrun,
    ``torchrun --nproc_per_node=N [--nnodes=M] -m chessrl`` (the same number of processes)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)) or world)
        nodes = f" --nnodes={world // local}" if world != local else ""
        return f"torchrun --nproc_per_node={local}{nodes} -m chessrl"
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "chessrl"
    if os.path.basename(argv0) == "__main__.py":
        python = os.path.relpath(sys.executable)
        return f"{shlex.quote(sys.executable if python.startswith('..') else python)} -m chessrl"
    on_path = shutil.which("chessrl")
    if on_path and os.path.exists(argv0) and os.path.samefile(on_path, argv0):
        return "chessrl"
    rel = os.path.relpath(argv0) if os.path.exists(argv0) else argv0
    return shlex.quote(argv0 if rel.startswith("..") else rel)


def cmd_config_show(args: argparse.Namespace) -> int:
    from chessrl.config import config_to_dict, dumps_toml, load_config

    cfg = load_config(args.config, args.overrides)
    d = config_to_dict(cfg)
    print(
        json.dumps(d, indent=2) if args.json else dumps_toml(d), end="" if not args.json else "\n"
    )
    return 0


def cmd_config_reference(args: argparse.Namespace) -> int:
    from chessrl.configdoc import reference_markdown

    print(reference_markdown(builtin_only=args.builtin))
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    rows = pluginmanager.plugin_info()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        provides = ", ".join(
            [f"game {g}" for g in r["games"]]
            + [f"regulariser {x}" for x in r["regularisers"]]
            + [f"command {c}" for c in r["commands"]]
            + [f"evaluator of {e}" for e in r["evaluators"]]
        )
        if r["broken"]:
            provides = f"BROKEN: {r['broken']}"
        print(f"{r['name']:<16} {r['version'] or '-':<8} {r['distribution'] or '-':<18} {provides}")
        if not r["broken"]:
            print(f"{'':<16} hooks: {', '.join(r['hooks'])}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from chessrl import report

    return report.run_command(args.run_dir, json_out=args.json, window=args.window, out=args.out)


def cmd_play(args: argparse.Namespace) -> int:
    from chessrl.play import cmd_play as play

    return play(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chessrl", description="GRPO for board games, with plugins and self-diagnosing runs."
    )
    parser.add_argument("--version", action="version", version=f"chessrl {__version__}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help=f"print the traceback of an exception raised inside a plugin (anywhere on the "
        f"command line; or set {TRACEBACK_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="train an experiment config")
    _add_config_args(p)
    p.add_argument("--run-dir", help="run directory (default runs/<name>-<timestamp>/)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (this invocation)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir from its latest checkpoint",
    )
    p.add_argument(
        "--allow-change",
        action="append",
        default=[],
        metavar="KEY",
        help="with --resume: take this key's new value from the config or --set (repeatable; "
        "only safe keys, e.g. trainer.steps, trainer.lr; docs/reliability.md)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("config", help="inspect configs")
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    q = csub.add_parser(
        "show", help="print the resolved config (defaults filled in, overrides applied)"
    )
    _add_config_args(q)
    q.add_argument("--json", action="store_true", help="JSON instead of TOML")
    q.set_defaults(func=cmd_config_show)
    q = csub.add_parser(
        "reference",
        help="print every config field with its help text (markdown), installed "
        "third-party games and regularisers included",
    )
    q.add_argument(
        "--builtin", action="store_true", help="only what ships with chessrl (docs/config.md)"
    )
    q.set_defaults(func=cmd_config_reference)

    p = sub.add_parser("plugins", help="list installed plugins")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)

    from chessrl.report.cli import HELP as REPORT_HELP
    from chessrl.report.cli import add_arguments as add_report_arguments

    p = sub.add_parser("report", help=REPORT_HELP)
    add_report_arguments(p)
    p.set_defaults(func=cmd_report)

    from chessrl.evaluate import add_eval_command, add_sampling_arguments

    add_eval_command(sub)
    p = sub.add_parser(
        "play",
        help="play against a checkpoint's policy in the terminal, any game "
        "(docs/evaluation.md#play-the-policy)",
    )
    p.add_argument(
        "checkpoint",
        help="a checkpoint file (step_*.pt, initial.pt, a pretrained .pt) or a run directory",
    )
    p.add_argument(
        "--side",
        choices=("first", "second"),
        default="first",
        help="the side you play: first (White, X) or second (default first)",
    )
    add_sampling_arguments(p)
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the start position and of sampling (default 0)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="env.KEY=VALUE",
        help="override a game option of the checkpoint (repeatable), e.g. --set env.start=standard",
    )
    p.set_defaults(func=cmd_play)

    pm = pluginmanager.get_plugin_manager()
    commands = _PluginCommands(sub)
    pluginmanager.call_hook(pm, "chessrl_register_commands", subparsers=commands)
    for name in commands.clashes:
        print(
            f"chessrl: warning: a plugin adds command '{name}', which chessrl or another plugin "
            "already has; the plugin's one is left out (rename it in the plugin; 'chessrl "
            "plugins' lists which plugins implement chessrl_register_commands)",
            file=sys.stderr,
        )
    return parser


class _PluginCommands:
    """The ``subparsers`` a plugin's ``chessrl_register_commands`` gets: argparse's, except
    that a command name already taken (``run``, another plugin's) is left out with a warning
    instead of breaking every command with argparse's conflict error."""

    def __init__(self, sub: Any) -> None:
        self._sub = sub
        self.clashes: list[str] = []

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        taken = set(self._sub.choices)
        if name in taken or taken & set(kwargs.get("aliases", ())):
            self.clashes.append(name)
            return argparse.ArgumentParser(prog=f"chessrl {name}")  # used by no one
        return self._sub.add_parser(name, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._sub, attr)


TRACEBACK_ENV = pluginmanager.TRACEBACK_ENV


def _show_traceback(argv: list[str]) -> bool:
    import os

    if "--traceback" in argv:
        os.environ[TRACEBACK_ENV] = "1"  # a plugin that fails to import shows its traceback too
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    previous = _sigterm_interrupts()
    try:
        return _main(argv)
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    show_tb = _show_traceback(argv)
    argv = [a for a in argv if a != "--traceback"]  # accepted after the sub-command too
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        return int(args.func(args) or 0)
    except UserError as exc:
        _say(f"chessrl: error: {exc}")
        return 2
    except RunFailure as exc:
        _say_own(f"chessrl: error: {exc}")
        return 1
    except PluginError as exc:
        if isinstance(exc.error, UserError):
            _say(f"chessrl: error: {exc.error}")
            return 2
        if show_tb:
            import traceback

            traceback.print_exception(exc.error, file=sys.stderr)
            print(f"chessrl: error: {exc}", file=sys.stderr)
        else:
            print(
                f"chessrl: error: {exc} "
                f"(its traceback: rerun with --traceback or {TRACEBACK_ENV}=1)",
                file=sys.stderr,
            )
        return 1
    except (MemoryError, RuntimeError) as exc:
        if not out_of_memory(exc):
            raise
        print(
            f"chessrl: error: out of memory ({first_line(exc, 120)}); lower rollout.roots, "
            "rollout.group_size, trainer.eval_games or the policy sizes, or use a machine "
            "with more memory",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        if exc.filename is None:
            raise
        _say_own(
            f"chessrl: error: {exc.filename}: {exc.strerror or exc}; free space, make it "
            "writable or choose another path, then run the command again"
        )
        return 1
    except KeyboardInterrupt as exc:  # Interrupted carries 130 (SIGINT) or 143 (SIGTERM)
        _say("chessrl: interrupted")
        return getattr(exc, "exit_code", 130)


if __name__ == "__main__":
    sys.exit(main())
