"""Fault injection: each fault of docs/reliability.md produced for real, and what a run promises
after it.

Process faults run the real ``chessrl`` command in a subprocess: a signal it receives (SIGTERM,
SIGKILL), a lock another process holds, a full or read-only filesystem (a tmpfs or a read-only
bind mount in a user namespace), an engine process that dies, an installed plugin that fails
to import. The signals are sent at a known step by a throwaway plugin installed through a real
entry point (``fault``), so no test waits on a clock. Sized for a 2-core CPU: the tiny
tic-tac-toe config of conftest.py, a 16-wide chess policy at depth 1.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_TTT

from chessrl import checkpoint, hookimpl, pluginmanager
from chessrl.cli import main
from chessrl.config import load_config
from chessrl.errors import RunFailure, UserError
from chessrl.metrics import read_metrics
from chessrl.regularisers import Regulariser
from chessrl.trainer import train

REPO = Path(__file__).resolve().parents[1]
STOCKFISH = "/usr/games/stockfish"
needs_stockfish = pytest.mark.skipif(
    not os.access(STOCKFISH, os.X_OK), reason="needs Debian's stockfish"
)
quiet = dict(progress=False, echo=lambda line: None)


# --- helpers ---------------------------------------------------------------------------------

FAULT_PLUGIN = '''
"""A regulariser that injects one fault at a given step, once per run directory."""
import os, signal
from dataclasses import dataclass
from chessrl import hookimpl
from chessrl.regularisers import Regulariser
from chessrl.schema import opt

@dataclass
class FaultConfig:
    at_step: int = opt(0, "step whose end injects the fault (0 = never)")
    action: str = opt(
        "kill",
        "kill (SIGKILL itself) or wait (block on the FIFO at path until its writer closes)",
    )
    path: str = opt("", "the FIFO of action = wait")

class Fault(Regulariser):
    Config = FaultConfig

    @hookimpl
    def chessrl_train_start(self, run):
        self.marker = run.run_dir / ".fault_fired"

    @hookimpl
    def chessrl_step_end(self, metrics, step):
        if step != self.config.at_step or self.marker.exists():
            return None
        self.marker.touch()
        if self.config.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        with open(self.config.path) as fifo:
            fifo.read()
        return None

@hookimpl
def chessrl_register_regularisers(register):
    register("fault", Fault)
'''


def _dist(root: Path, module: str, source: str, name: str) -> dict[str, str]:
    """An installed distribution on a path entry: ``module``.py plus a dist-info with an entry
    point."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"chessrl_{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: chessrl-{name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[chessrl]\n{name} = {module}\n")
    return {"PYTHONPATH": str(root)}


@pytest.fixture
def fault_env(tmp_path):
    return _dist(tmp_path / "site", "chessrl_fault", FAULT_PLUGIN, "fault")


def _config(tmp_path: Path, extra: str = "", base: str = TINY_TTT, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(base + extra)
    return p


def _env(extra: dict | None = None) -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "disabled", **(extra or {})}


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "chessrl", *args]


def _run(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        _cmd(*args), capture_output=True, text=True, env=_env(env), cwd=REPO, timeout=timeout
    )


def _one_error(res, code: int) -> str:
    """The run exited with ``code`` and said why in exactly one line, without a traceback."""
    assert res.returncode == code, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("chessrl: error:")]
    assert len(errors) == 1, res.stderr[-3000:]
    return errors[0]


def _steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")]


def _same_numbers(a: Path, b: Path) -> None:
    """Two runs logged the same rows, timings aside."""
    ra, rb = read_metrics(a / "metrics.jsonl"), read_metrics(b / "metrics.jsonl")
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]  # noqa: E731
    assert strip(ra) == strip(rb)


def _wait_for_reader(fifo: Path, proc: subprocess.Popen, timeout: float = 240) -> int:
    """Open ``fifo`` for writing once ``proc`` has opened it for reading (it is then inside the
    fault's step); fail if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run never reached the fault"
        time.sleep(0.02)  # polls for a condition; no assertion depends on how long this takes


def _read_until(proc: subprocess.Popen, text: str, timeout: float = 120) -> None:
    """Read ``proc``'s stderr up to a line containing ``text`` (a watchdog kills a run that never
    says it)."""
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        for line in proc.stderr:
            if text in line:
                return
        raise AssertionError(f"the run never said {text!r}")
    finally:
        watchdog.cancel()


def _unshare_ok() -> bool:
    if not shutil.which("unshare"):
        return False
    res = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True
    )
    return res.returncode == 0


needs_userns = pytest.mark.skipif(
    not _unshare_ok(), reason="needs unprivileged user namespaces (unshare)"
)


def _in_namespace(script: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a shell script as root of a new user and mount namespace: it may mount a tmpfs or a
    read-only bind mount that only it sees."""
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "bash", "-c", script],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
        timeout=timeout,
    )


# --- 2. divergence ---------------------------------------------------------------------------


def test_non_finite_or_malformed_numbers_are_refused_in_the_config(tmp_path):
    cfg = _config(tmp_path, base=TINY_TTT.replace("lr = 1e-3", "lr = inf"))
    line = TINY_TTT.splitlines().index("lr = 1e-3") + 1
    with pytest.raises(
        UserError, match=rf"c\.toml:{line}: 'trainer\.lr' = inf is not a finite number"
    ):
        load_config(cfg)
    ok = _config(tmp_path, name="ok.toml")
    for item, message in [
        ("trainer.lr=nan", "--set trainer.lr=nan: 'trainer.lr' = nan is not a finite number"),
        ("loss.clip_high=inf", "'loss.clip_high' = inf is not a finite number"),
        ("trainer.betas=[0.9, inf]", "'trainer.betas' = [0.9, inf] is not a finite number"),
        ("trainer.betas=[2.0, 5.0]", "every element must be < 1.0 (2.0 is not)"),
        ("trainer.betas=[0.9]", "has 1 element(s): expected exactly 2"),
        ("seed=-1", "'seed' = -1 is out of range: expected >= 0"),
    ]:
        with pytest.raises(UserError) as info:
            load_config(ok, [item])
        assert message in str(info.value) and "\n" not in str(info.value), item
    # 9. a --set mistake is blamed on the --set item, not on the file line of the key it overrides
    with pytest.raises(
        UserError, match=r"^--set trainer\.lr=-1: 'trainer\.lr' = -1.0 is out of range"
    ):
        load_config(ok, ["trainer.lr=-1"])
    res = _run("config", "show", str(ok), "--set", "trainer.betas=[2.0, 5.0]")
    assert "--set trainer.betas=[2.0, 5.0]:" in _one_error(res, 2)


@pytest.mark.slow
def test_diverging_run_skips_counts_stops_and_never_saves_a_broken_checkpoint(tmp_path):
    cfg = _config(
        tmp_path, base=TINY_TTT.replace("[trainer]\n", "[trainer]\nmax_consecutive_skips = 3\n")
    )
    run_dir = tmp_path / "run"
    res = _run(
        "run", str(cfg), "--run-dir", str(run_dir), "--set", "trainer.lr=1e8", "--no-progress"
    )
    line = _one_error(res, 1)
    assert (
        "training diverged: 3 consecutive steps skipped" in line
        and f"--resume --run-dir {run_dir}" in line
    )
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["train/skipped_steps"] for r in rows] == [
        0,
        1,
        2,
        3,
    ]  # step 1's update made the logits NaN
    log = (run_dir / "train.log").read_text()
    assert "step 2 skipped: non-finite logits" in log and "health warning [skipped_steps]" in log
    assert "training diverged" in log
    for path in (run_dir / "checkpoints").iterdir():  # every checkpoint holds a usable policy
        state = checkpoint.load(path)
        assert all(torch.isfinite(v).all() for v in state["policy"].values()), path
    assert (
        checkpoint.latest(run_dir / "checkpoints") is None
    )  # steps 2 and 4 were not saved: their logits were NaN
    # the cause fixed, the run continues from its last healthy state (initial.pt)
    res = _run(
        "run",
        str(cfg),
        "--run-dir",
        str(run_dir),
        "--resume",
        "--set",
        "trainer.lr=1e-3",
        "--allow-change",
        "trainer.lr",
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and all(
        r["train/lr"] == 1e-3 for r in rows
    )
    assert rows[-1]["train/skipped_steps"] == 0


class InfiniteLR(Regulariser):
    """A learning-rate schedule gone wrong: every optimiser step makes the weights infinite."""

    @hookimpl
    def chessrl_train_start(self, run):
        for group in run.optimizer.param_groups:
            group["lr"] = math.inf
        self.run = run

    @hookimpl
    def chessrl_step_end(self, metrics, step):
        self.states.append(
            (
                {k: v.clone() for k, v in self.run.policy.state_dict().items()},
                self.run.optimizer.state_dict()["state"],
            )
        )


class InfiniteLRModule:
    @staticmethod
    @hookimpl
    def chessrl_register_regularisers(register):
        register("infinite_lr", InfiniteLR)


def test_non_finite_parameters_are_rolled_back_with_the_optimiser_state(
    tiny_config, tmp_path, register_plugin
):
    register_plugin(InfiniteLRModule, "infinite_lr_module")
    InfiniteLR.states = []
    cfg = load_config(tiny_config, ["plugins.infinite_lr={}", "trainer.max_consecutive_skips=3"])
    with pytest.raises(RunFailure, match="training diverged: 3 consecutive steps skipped"):
        train(cfg, tmp_path / "run", **quiet)
    initial = checkpoint.load(tmp_path / "run" / "checkpoints" / "initial.pt")["policy"]
    assert len(InfiniteLR.states) == 3
    for (
        policy,
        opt_state,
    ) in InfiniteLR.states:  # after every step: the weights before it, no Adam moments
        assert all(torch.equal(policy[k], initial[k]) for k in initial)
        assert opt_state == {}
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["train/skipped_steps"] for r in rows] == [1, 2, 3] and all(
        r["train/ppo_epochs_run"] == 0 for r in rows
    )
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count("skipped: the optimiser step made parameters non-finite (undone)") == 3


# --- 3. the run-directory lock and 7. SIGTERM -----------------------------------------------


@pytest.mark.slow
def test_a_second_run_on_a_busy_directory_is_refused_and_sigterm_checkpoints(tmp_path, fault_env):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cfg = _config(tmp_path, f'\n[plugins.fault]\nat_step = 3\naction = "wait"\npath = "{fifo}"\n')
    run_dir = tmp_path / "run"
    first = subprocess.Popen(
        _cmd("run", str(cfg), "--run-dir", str(run_dir), "--no-progress"),
        env=_env(fault_env),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    writer = _wait_for_reader(fifo, first)  # the first run is inside step 3 and holds the lock
    try:
        second = _run(
            "run", str(cfg), "--run-dir", str(run_dir), "--resume", "--no-progress", env=fault_env
        )
        line = _one_error(second, 2)
        assert f"is in use by another chessrl run (pid {first.pid}" in line
        first.send_signal(signal.SIGTERM)  # 7: like Ctrl-C: step 3 finishes and is saved
        _read_until(first, "SIGTERM: finishing this step")
    finally:
        os.close(writer)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 143, err[-3000:]
    assert (
        f"interrupted: checkpoint at step 3 in {run_dir / 'checkpoints'}; "
        f"continue with --resume --run-dir {run_dir}" in err
    )
    assert "Traceback" not in err
    assert _steps(run_dir) == [1, 2, 3] and checkpoint.load(run_dir)["step"] == 3
    res = _run(
        "run", str(cfg), "--run-dir", str(run_dir), "--resume", "--no-progress", env=fault_env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert _steps(run_dir) == [1, 2, 3, 4, 5, 6]


def test_a_second_sigterm_aborts_at_once(tmp_path, fault_env):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cfg = _config(tmp_path, f'\n[plugins.fault]\nat_step = 3\naction = "wait"\npath = "{fifo}"\n')
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        _cmd("run", str(cfg), "--run-dir", str(run_dir), "--no-progress"),
        env=_env(fault_env),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    writer = _wait_for_reader(fifo, proc)
    try:
        proc.send_signal(signal.SIGTERM)
        _read_until(proc, "SIGTERM: finishing this step")  # the first one was handled
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        os.close(writer)
    assert proc.returncode == 143 and "Traceback" not in err, err[-3000:]
    assert checkpoint.load(run_dir)["step"] == 2  # no checkpoint of the aborted step 3


# --- 4. resume with a changed config -------------------------------------------------------------


def test_resume_refuses_a_changed_config_unless_a_safe_change_is_allowed(tiny_config, tmp_path):
    run_dir = tmp_path / "run"
    train(load_config(tiny_config, ["trainer.steps=2"]), run_dir, **quiet)
    before = (run_dir / "metrics.jsonl").read_text()
    changed = load_config(tiny_config, ["trainer.steps=4", "trainer.lr=3e-4", "rollout.roots=8"])
    with pytest.raises(UserError) as info:
        train(changed, run_dir, resume=True, **quiet)
    msg = str(info.value)
    assert (
        "rollout.roots (4 -> 8)" in msg
        and "trainer.lr (0.001 -> 0.0003)" in msg
        and "trainer.steps (2 -> 4)" in msg
    )
    assert "--allow-change trainer.lr --allow-change trainer.steps" in msg
    with pytest.raises(
        UserError, match="--allow-change rollout.roots: not a change a resumed run can take"
    ):
        train(changed, run_dir, resume=True, allow_change=["rollout.roots"], **quiet)
    other_game = load_config(tiny_config, ["env.name=connect_four", "trainer.steps=2"])
    with pytest.raises(
        UserError, match="holds a 'tictactoe' run and this config plays 'connect_four'"
    ):
        train(other_game, run_dir, resume=True, **quiet)
    assert (run_dir / "metrics.jsonl").read_text() == before  # nothing was touched

    allowed = load_config(tiny_config, ["trainer.steps=4", "trainer.lr=3e-4"])
    train(allowed, run_dir, resume=True, allow_change=["trainer.steps", "trainer.lr"], **quiet)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["train/lr"] for r in rows] == [
        1e-3,
        1e-3,
        3e-4,
        3e-4,
    ]  # applied to the optimiser, not only stored
    assert checkpoint.load(run_dir)["optimizer"]["param_groups"][0]["lr"] == 3e-4
    log = (run_dir / "train.log").read_text()
    assert "resume: trainer.lr changed from 0.001 to 0.0003 (--allow-change trainer.lr)" in log
    assert "lr = 0.0003" in (run_dir / "config.toml").read_text()


# --- 5. resumes are exact for every opponent ------------------------------------------------

CONNECT_FOUR = TINY_TTT.replace(
    'name = "tictactoe"', 'name = "connect_four"\nsolver_depth = 1\nopponent_depth = 1'
).replace("plies = 9", "plies = 6")


@pytest.mark.parametrize(
    "base, opponents",
    [(TINY_TTT, ("perfect", "random")), (CONNECT_FOUR, ("solver", "random"))],
    ids=["tictactoe", "connect_four"],
)
def test_interrupted_run_replays_an_uninterrupted_one_with_engine_opponents(
    tmp_path, base, opponents
):
    # the engine answers in the rollouts (its tie-breaks draw from the game's generator), teacher
    # forcing asks it too, and every second step evaluates against both evaluation opponents
    over = [
        "rollout.opponent=engine",
        "rollout.teacher_forcing_prob=0.5",
        "trainer.eval_every=2",
        "trainer.eval_games=6",
        "trainer.checkpoint_every=3",
        "trainer.steps=5",
    ]
    cfg = load_config(_config(tmp_path, base=base), over)
    straight = train(cfg, tmp_path / "straight", **quiet)
    split = tmp_path / "split"
    train(cfg, split, max_steps=2, **quiet)  # steps 1-2 (the end of a call is checkpointed)
    train(cfg, split, max_steps=2, resume=True, **quiet)  # steps 3-4, evaluating at 4
    train(cfg, split, resume=True, **quiet)  # step 5
    rows = read_metrics(split / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4, 5]
    assert {f"eval/{o}/score" for o in opponents} <= set(rows[2]) and rows[1][
        "rollout/teacher_forced_frac"
    ] > 0
    _same_numbers(straight, split)


# --- 6. dead-end run directories ------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_before_the_first_step_checkpoint_resumes_from_initial(tmp_path, fault_env):
    cfg = _config(
        tmp_path,
        "\n[plugins.fault]\nat_step = 2\n",
        base=TINY_TTT.replace("checkpoint_every = 2", "checkpoint_every = 100"),
    )
    run_dir = tmp_path / "run"
    res = _run("run", str(cfg), "--run-dir", str(run_dir), "--no-progress", env=fault_env)
    assert res.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["initial.pt"]
    assert (run_dir / ".lock").exists()  # the dead process's lock stays, unheld
    killed = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in killed] == [1]
    res = _run(
        "run", str(cfg), "--run-dir", str(run_dir), "--resume", "--no-progress", env=fault_env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed from step 0 (checkpoints/initial.pt)" in (run_dir / "train.log").read_text()
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    no_time = lambda row: {k: v for k, v in row.items() if not k.startswith("time/")}  # noqa: E731
    assert no_time(rows[0]) == no_time(killed[0])  # step 1 replayed exactly


def test_max_steps_must_be_at_least_one(tiny_config, tmp_path, capsys):
    res = _run("run", str(tiny_config), "--run-dir", str(tmp_path / "run"), "--max-steps", "-5")
    assert "--max-steps -5: give the number of steps to run, at least 1" in _one_error(res, 2)
    assert (
        main(["run", str(tiny_config), "--run-dir", str(tmp_path / "run"), "--max-steps", "0"]) == 2
    )
    assert "--max-steps 0: give the number of steps to run, at least 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_plugin_refusing_the_config_leaves_the_run_dir_as_it_was(tiny_config, tmp_path, capsys):
    """A configuration error a plugin finds in train_start (after the run is built) is one line
    and exit 2, and the fixed command starts in the same --run-dir: nothing half-written."""
    bad = tmp_path / "bad.toml"
    bad.write_text(tiny_config.read_text() + "\n[plugins.entropy_floor]\nfloor = 0.5\n")
    new, kept = tmp_path / "new", tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    for run_dir in (new, kept):
        assert main(["run", str(bad), "--run-dir", str(run_dir), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert "enable [plugins.entropy_bonus]" in err[-1]
    assert not new.exists()
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]
    fix = ["--set", "plugins.entropy_floor.action='warn'", "--max-steps", "1", "--no-progress"]
    assert main(["run", str(bad), "--run-dir", str(kept), *fix]) == 0
    assert [r["step"] for r in read_metrics(kept / "metrics.jsonl") if r.get("train/loss")] == [1]
    assert (kept / "notes.txt").read_text() == "mine"


def test_a_run_dir_that_cannot_be_created_is_one_line(tiny_config, tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    assert main(["run", str(tiny_config), "--run-dir", str(tmp_path / "file" / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot use it as the run directory (Not a directory)" in err[0]


# --- 8. disks -------------------------------------------------------------------------------


@pytest.mark.slow
@needs_userns
def test_a_full_disk_fails_in_one_line_leaves_no_temp_file_and_the_run_resumes(tmp_path):
    """A 32 KiB tmpfs cannot hold initial.pt (52 KB); at 128 KiB the step-2 checkpoint (159 KB) does
    not fit; at 4 MiB the run finishes. One namespace, so the tmpfs outlives each command."""
    cfg = _config(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run = f"{sys.executable} -m chessrl run {cfg} --run-dir {mnt}/run --no-progress"
    res = _in_namespace(f"""
        mount -t tmpfs -o size=32k tmpfs {mnt}
        {run}; echo "rc=$?"; ls -A {mnt}/run {mnt}/run/checkpoints
        mount -o remount,size=128k {mnt}
        {run} --resume; echo "rc=$?"; ls -A {mnt}/run/checkpoints
        mount -o remount,size=4m {mnt}
        {run} --resume; echo "rc=$?"; ls -A {mnt}/run/checkpoints; cat {mnt}/run/metrics.jsonl
    """)
    out, err = res.stdout, res.stderr
    assert res.returncode == 0 and "Traceback" not in err, err[-3000:]
    assert [line for line in out.splitlines() if line.startswith("rc=")] == [
        "rc=1",
        "rc=1",
        "rc=0",
    ], out + err
    errors = [line for line in err.splitlines() if line.startswith("chessrl: error:")]
    assert len(errors) == 2, err
    assert "No space left on device" in errors[0]
    assert (
        "cannot write the step-2 checkpoint" in errors[1] and "No space left on device" in errors[1]
    )
    assert ".tmp" not in out
    listings = out.split("rc=")
    assert (
        "initial.pt" not in listings[1] and "config.toml" in listings[1]
    )  # a dead start: config only
    assert listings[2].split()[:3] == [
        "1",
        "initial.pt",
        "run",
    ]  # resumed from nothing; step 2 failed
    assert "step_0000006.pt" in listings[3]
    steps = [json.loads(line)["step"] for line in out.splitlines() if line.startswith("{")]
    assert steps == [1, 2, 3, 4, 5, 6]


@needs_userns
def test_a_read_only_checkpoint_folder_fails_in_one_line_and_the_run_resumes(tiny_config, tmp_path):
    run_dir = tmp_path / "run"
    train(load_config(tiny_config), run_dir, max_steps=2, **quiet)
    ckpts = run_dir / "checkpoints"
    before = sorted(p.name for p in ckpts.iterdir())
    res = _in_namespace(f"""
        mount --bind -o ro {ckpts} {ckpts}
        exec {sys.executable} -m chessrl run {tiny_config} --run-dir {run_dir} --resume \\
            --no-progress
    """)
    line = _one_error(res, 1)
    assert "cannot write the step-4 checkpoint" in line and "Read-only file system" in line
    assert f"--resume --run-dir {run_dir}" in line
    assert sorted(p.name for p in ckpts.iterdir()) == before  # no temp file, nothing pruned
    assert "cannot write the step-4 checkpoint" in (run_dir / "train.log").read_text()
    train(load_config(tiny_config), run_dir, resume=True, **quiet)
    assert _steps(run_dir) == [1, 2, 3, 4, 5, 6]


def test_a_checkpoint_missing_keys_is_one_line(tiny_config, tmp_path):
    run_dir = tmp_path / "run"
    train(load_config(tiny_config), run_dir, max_steps=2, **quiet)
    state = checkpoint.load(run_dir)
    del state["optimizer"], state["plugins"]
    checkpoint.write(run_dir / "checkpoints" / "step_0000002.pt", state)
    res = _run("run", str(tiny_config), "--run-dir", str(run_dir), "--resume", "--no-progress")
    line = _one_error(res, 2)
    assert "step_0000002.pt: not a training checkpoint (missing optimizer, plugins)" in line


def test_a_metrics_row_the_disk_cannot_take_is_absent_and_the_error_names_the_file(tmp_path):
    """A file-size limit (EFBIG, as a full disk gives ENOSPC) hit while writing a row: the row is
    not left half-written and the error names metrics.jsonl."""
    script = textwrap.dedent(
        f"""
        import resource, signal
        from pathlib import Path
        from chessrl.metrics import MetricsLogger
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        log = MetricsLogger(Path({str(tmp_path)!r}), wandb="disabled")
        log.log({{"step": 1, "train/loss": 0.5}})
        size = Path({str(tmp_path / "metrics.jsonl")!r}).stat().st_size
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 20, size + 20))
        try:
            for step in range(2, 50):
                log.log({{"step": step, "train/loss": 0.123456789, "train/entropy": 1.0}})
        except OSError as exc:
            print("ERR", exc.filename, exc.errno)
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert f"ERR {tmp_path / 'metrics.jsonl'} {errno.EFBIG}" in res.stdout
    text = (tmp_path / "metrics.jsonl").read_text()
    assert text.endswith("\n") and [
        r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")
    ] == [1]


def test_a_config_too_big_for_memory_is_one_line_and_writes_nothing(tiny_config, tmp_path):
    """A policy the machine cannot allocate (here under a 3 GiB address-space limit): one line
    naming the sizes to lower, exit 2, no run directory."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    run_dir = tmp_path / "run"
    big = ["--set", "policy.d_model=8192", "--set", "policy.d_ff=65536"]
    res = subprocess.run(
        _cmd("run", str(tiny_config), "--run-dir", str(run_dir), "--no-progress", *big),
        capture_output=True,
        text=True,
        env=_env(None),
        cwd=REPO,
        timeout=300,
        preexec_fn=limit,
    )
    line = _one_error(res, 2)
    assert "does not fit in memory" in line and "policy.d_model 8192" in line
    assert not run_dir.exists()


def test_a_refused_resume_leaves_the_run_as_it_was(tiny_config, tmp_path):
    """A resume whose checkpoint is refused (here a crafted step) is one line and exit 2, and
    config.toml and train.log are as they were, even with an allowed config change."""
    run_dir = tmp_path / "run"
    train(load_config(tiny_config), run_dir, max_steps=2, **quiet)
    state = checkpoint.load(run_dir)
    state["step"] = "abc"
    torch.save(state, run_dir / "checkpoints" / "step_0000002.pt")
    before = {n: (run_dir / n).read_bytes() for n in ("config.toml", "train.log")}
    res = _run(
        "run",
        str(tiny_config),
        "--run-dir",
        str(run_dir),
        "--resume",
        "--no-progress",
        "--set",
        "trainer.steps=8",
        "--allow-change",
        "trainer.steps",
    )
    line = _one_error(res, 2)
    assert "not a valid chessrl checkpoint: 'step' holds str" in line
    assert "to resume from the one before it (initial.pt), move it aside: mv " in line
    assert {n: (run_dir / n).read_bytes() for n in before} == before


# --- 8/9. engines ---------------------------------------------------------------------------

CHESS = """
name = "tinychess"
seed = 1
[env]
name = "chess"
depth = 1
engines = 1
engine_retries = 1
engine_move_depth = 1
max_plies = 40
[policy]
d_model = 16
n_layers = 1
n_heads = 2
d_ff = 32
[rollout]
roots = 1
group_size = 2
plies = 2
[trainer]
steps = 2
checkpoint_every = 1
[logging]
wandb = "disabled"
progress = false
"""

# Answers the UCI handshake, then dies at the first search, like an engine crashing. With a
# marker path it does so once (the first process) and execs Stockfish from then on.
DYING_ENGINE = """#!{python}
import os, sys
marker = {marker!r}
if marker and os.path.exists(marker):
    os.execv({stockfish!r}, [{stockfish!r}])
for line in sys.stdin:
    word = (line.split() or [""])[0]
    if word == "uci":
        print("id name dying\\nuciok", flush=True)
    elif word == "isready":
        print("readyok", flush=True)
    elif word in ("go", "eval"):
        if marker:
            open(marker, "w").close()
        sys.exit(3)
"""


def _engine(tmp_path: Path, marker: str = "") -> Path:
    path = tmp_path / "engine.py"
    path.write_text(DYING_ENGINE.format(python=sys.executable, marker=marker, stockfish=STOCKFISH))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@needs_stockfish
def test_engine_faults_are_one_line_and_logged(tmp_path):
    cfg = _config(tmp_path, base=CHESS)
    # an engine path that is not an engine: refused before anything is written
    res = _run(
        "run", str(cfg), "--run-dir", str(tmp_path / "a"), "--set", "env.stockfish_path=/bin/true"
    )
    assert "'/bin/true' is not a UCI chess engine" in _one_error(res, 2)
    assert not (tmp_path / "a").exists()
    # an engine that dies at every search: past its retries, one line and train.log
    run_dir = tmp_path / "b"
    res = _run(
        "run",
        str(cfg),
        "--run-dir",
        str(run_dir),
        "--set",
        f"env.stockfish_path={_engine(tmp_path)}",
    )
    line = _one_error(res, 1)
    assert "the game's engine failed" in line and "after 2 attempts" in line
    assert f"--resume --run-dir {run_dir}" in line
    assert "the game's engine failed" in (run_dir / "train.log").read_text()


@needs_stockfish
def test_an_engine_restart_is_counted_and_logged(tmp_path):
    cfg = _config(tmp_path, base=CHESS)
    engine = _engine(tmp_path, marker=str(tmp_path / "crashed-once"))
    run_dir = train(load_config(cfg, [f"env.stockfish_path={engine}"]), tmp_path / "run", **quiet)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["rollout/engine_restarts"] for r in rows] == [1, 0]
    assert (
        "step 1: the game's engine was restarted 1 time(s)" in (run_dir / "train.log").read_text()
    )


# --- 9. reports -----------------------------------------------------------------------------


def test_report_names_the_command_and_the_garbage_line(tiny_config, tmp_path, capsys):
    from chessrl import report

    with pytest.raises(UserError, match="made by 'chessrl run'"):
        report.read_run_metrics(tmp_path / "nowhere")
    run_dir = train(load_config(tiny_config, ["trainer.steps=3"]), tmp_path / "run", **quiet)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text(
        "\n".join([lines[0], "#garbage", *lines[1:], '{"step": 4, "tr']) + "\n"
    )
    assert report.main([str(run_dir)]) == 0
    md = (run_dir / "report.md").read_text()
    assert "Line 2 of metrics.jsonl is not a metrics row (damaged mid-file)" in md
    assert "line 5, a partial last line, was ignored" in md


# --- 10. a broken plugin --------------------------------------------------------------------


@pytest.mark.slow
def test_a_plugin_that_fails_to_import_breaks_only_configs_that_use_it(tmp_path, tiny_config):
    env = _dist(
        tmp_path / "site", "chessrl_broken_mod", "raise ImportError('needs libfoo 2')\n", "broken"
    )
    warning = (
        "chessrl: warning: plugin 'broken' (chessrl-broken 0.1) failed to load: "
        "ImportError: needs libfoo 2"
    )
    res = _run(
        "run",
        str(tiny_config),
        "--run-dir",
        str(tmp_path / "run"),
        "--max-steps",
        "1",
        "--no-progress",
        env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert [line for line in res.stderr.splitlines() if line.startswith("chessrl: warning:")] == [
        warning + "; it is disabled ('chessrl plugins' lists it)"
    ]
    res = _run("plugins", "--json", env=env)
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert (
        rows["broken"]["broken"] == "ImportError: needs libfoo 2"
        and rows["tictactoe"]["broken"] is None
    )
    res = _run(
        "run",
        str(tiny_config),
        "--run-dir",
        str(tmp_path / "other"),
        "--set",
        "plugins.broken={}",
        env=env,
    )
    line = _one_error(res, 2)
    assert (
        "plugin 'broken' (chessrl-broken 0.1) is installed but failed to load: "
        "ImportError: needs libfoo 2" in line
    )
    assert pluginmanager.broken() == {}  # this process never saw the throwaway distribution


def test_the_reliability_table_names_tests_that_exist():
    import re

    text = (REPO / "docs" / "reliability.md").read_text()
    named = set(re.findall(r"`(?:(tests/\w+\.py)::)?(test_\w+)`", text))
    assert len(named) >= 15
    for path, name in named:
        source = (REPO / (path or "tests/test_faults.py")).read_text()
        assert f"def {name}(" in source, (
            f"docs/reliability.md names {path or 'tests/test_faults.py'}::{name}"
        )
