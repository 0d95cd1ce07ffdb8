"""The metrics stream: one JSON object per step in ``RUN_DIR/metrics.jsonl``, mirrored to wandb.

Keys must belong to the documented namespaces (docs/metrics.md); a key outside them is a bug
and raises. wandb never blocks or fails a run: 'auto' means offline unless an API key is
configured, and an online init that fails falls back to offline with one printed line.
wandb's own environment variables (``WANDB_MODE``, ``WANDB_PROJECT``, ``WANDB_ENTITY``,
``WANDB_RUN_GROUP``, ``WANDB_TAGS``, ``WANDB_RUN_ID``) win over the config. The run id is kept
in ``RUN_DIR/wandb_run_id`` so that ``--resume`` continues the same wandb run
(docs/training.md#wandb-and-the-progress-bar).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chessrl import keys as K

NAMESPACES = K.NAMESPACES


def check_keys(row: dict[str, Any]) -> None:
    """Raise unless every key of ``row`` is in a documented namespace (what the logger checks)."""
    for k in row:
        if k != K.STEP and not k.startswith(NAMESPACES):
            raise ValueError(f"metric key {k!r} is outside the documented namespaces {NAMESPACES}")


def row(step: int, *parts: dict[str, Any], **values: Any) -> dict[str, Any]:
    """One metrics row: ``{"step": step}`` and the keys of ``parts`` and ``values``, each
    checked against the documented vocabulary (:mod:`chessrl.keys`, docs/metrics.md).

    ``train/``, ``rollout/`` and ``time/`` keys must be defined ones, ``budget/`` keys
    ``budget/<term>/<metric>``, ``plugin/`` keys ``plugin/<name>/<key>``; ``eval/`` keys are
    open (a game's benchmark adds its own). A key given twice, or ``step`` in a part, raises.
    """
    out: dict[str, Any] = {K.STEP: step}
    for part in (*parts, values):
        for key, value in part.items():
            problem = "a metrics row gets its step once" if key == K.STEP else K.check(key)
            if problem is None and key in out:
                problem = f"metric key {key!r} is given twice in one row"
            if problem:
                raise ValueError(problem)
            out[key] = value
    return out


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v


WANDB_ID_FILE = "wandb_run_id"
_ENV_MODES = {"dryrun": "offline", "run": "online"}  # wandb's older names


def wandb_mode(setting: str) -> str:
    """The mode a run uses: ``WANDB_MODE`` (or ``WANDB_DISABLED=true``) when set, else the
    config's ``logging.wandb``, where 'auto' is online only with an API key configured."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env:
        return _ENV_MODES.get(env, env)
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("true", "1", "yes"):
        return "disabled"
    if setting != "auto":
        return setting
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    if netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


class MetricsLogger:
    """Appends rows to ``metrics.jsonl`` (flushed every step) and logs them to wandb."""

    def __init__(
        self,
        run_dir: Path,
        *,
        wandb: str = "auto",
        project: str = "chessrl",
        name: str = "run",
        config: dict | None = None,
        resume_step: int | None = None,
        entity: str = "",
        group: str = "",
        tags: list[str] | tuple[str, ...] = (),
    ) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        if (
            resume_step is not None
        ):  # a resume from step N (0: from initial.pt) drops the rows after N
            truncate_metrics(self.path, resume_step)
        self.file = open(self.path, "ab", buffering=0)  # unbuffered: a row is on disk or absent
        self.run = None
        self.where = (
            ""  # one line: where wandb writes (the offline folder and its sync command, or the URL)
        )
        mode = wandb_mode(wandb)
        if mode != "disabled":
            kwargs = {
                k: v
                for k, v in _settings(
                    project=project, entity=entity, group=group, tags=list(tags)
                ).items()
                if v
            }
            self.run = _init_wandb(mode, name, config or {}, Path(run_dir), kwargs)
            self.where = _where(self.run)

    def log(self, row: dict[str, Any]) -> None:
        check_keys(row)
        clean = {k: _jsonable(v) for k, v in row.items()}
        data = (json.dumps(clean) + "\n").encode()
        fd = self.file.fileno()
        end = os.lseek(fd, 0, os.SEEK_END)
        try:
            done = 0
            while done < len(data):
                done += os.write(fd, data[done:])
        except OSError as exc:  # a full disk: no partial row is left, and the error names the file
            with contextlib.suppress(OSError):
                os.ftruncate(fd, end)
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None
        if self.run is not None:
            try:
                self.run.log(
                    {k: v for k, v in clean.items() if k != "step"}, step=int(clean["step"])
                )
            except Exception as exc:  # wandb must never break a run
                print(
                    f"wandb: logging failed ({exc}); continuing with metrics.jsonl only",
                    file=sys.stderr,
                )
                self.run = None

    def finding(self, code: str, severity: str, line: str, subject: str = "") -> None:
        """A health finding: a wandb alert (WARN or ERROR; info findings only in the summary) and
        the summary entry ``health/<code>/<subject>`` (``health/<code>`` without a subject)
        holding its line: the latest finding of that rule about that plugin, term or metric."""
        if self.run is None:
            return
        try:
            import wandb

            self.run.summary[f"health/{code}/{subject}" if subject else f"health/{code}"] = line
            if severity in ("warning", "error"):
                # wandb's __init__.pyi leaves out AlertLevel, which wandb exports at runtime
                alerts = wandb.AlertLevel  # type: ignore[attr-defined]
                level = alerts.ERROR if severity == "error" else alerts.WARN
                self.run.alert(title=f"chessrl {code}", text=line, level=level, wait_duration=0)
        except Exception as exc:  # wandb must never break a run
            print(f"wandb: sending a finding failed ({type(exc).__name__}: {exc})", file=sys.stderr)

    def upload(
        self,
        name: str,
        kind: str,
        files: list[Path],
        description: str = "",
        base: Path | None = None,
    ) -> None:
        """Upload ``files`` as one wandb artifact ``name`` of type ``kind``, each named by its path
        under ``base`` (nothing without wandb)."""
        if self.run is None or not files:
            return
        try:
            import wandb

            art = wandb.Artifact(name, type=kind, description=description)
            for f in files:
                rel = (
                    Path(f).relative_to(base)
                    if base is not None and Path(f).is_relative_to(base)
                    else Path(f).name
                )
                art.add_file(str(f), name=str(rel))
            self.run.log_artifact(art)
        except Exception as exc:  # wandb must never break a run
            print(
                f"wandb: uploading {kind} artifact {name} failed ({type(exc).__name__}: {exc})",
                file=sys.stderr,
            )

    def close(self) -> None:
        self.file.close()
        if self.run is not None:
            try:
                self.run.finish()
            except Exception as exc:
                print(
                    f"wandb: finishing the run failed ({type(exc).__name__}: {exc})",
                    file=sys.stderr,
                )
            self.run = None


_ENV_OF = {
    "project": "WANDB_PROJECT",
    "entity": "WANDB_ENTITY",
    "group": "WANDB_RUN_GROUP",
    "tags": "WANDB_TAGS",
}


def _settings(**config: Any) -> dict[str, Any]:
    """The config's wandb settings with each one whose environment variable is set replaced by
    it (read here, at every init: wandb itself reads its environment once per process)."""
    out = dict(config)
    for key, var in _ENV_OF.items():
        value = os.environ.get(var, "").strip()
        if value:
            out[key] = (
                [t.strip() for t in value.split(",") if t.strip()] if key == "tags" else value
            )
    return out


def wandb_run_id(run_dir: Path) -> str:
    """The wandb run id of ``run_dir``: ``WANDB_RUN_ID`` when set, else the one stored in
    ``RUN_DIR/wandb_run_id`` by an earlier invocation, else a new one, stored there."""
    if os.environ.get("WANDB_RUN_ID"):
        return os.environ["WANDB_RUN_ID"]
    path = Path(run_dir) / WANDB_ID_FILE
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    import secrets
    import string

    run_id = "".join(
        secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8)
    )  # wandb's format
    path.write_text(run_id + "\n")
    return run_id


def _where(run: Any) -> str:
    """Where wandb writes: the offline folder with the command that uploads it, or the run's URL."""
    if run is None:
        return ""
    try:
        if run.settings.mode == "offline" or getattr(run, "offline", False):
            folder = Path(run.dir).parent
            return (
                f"wandb: offline run {run.id} in {folder}; upload it with: wandb sync {folder} "
                "(a resumed run adds a folder with the same id: wandb sync "
                f"{folder.parent}/offline-run-*-{run.id}*)"
            )
        return f"wandb: run {run.id} at {run.url}"
    except Exception:
        return ""


def _init_wandb(mode: str, name: str, config: dict, run_dir: Path, kwargs: dict):
    os.environ.setdefault(
        "WANDB_SILENT", "true"
    )  # chessrl prints where the run goes itself (_where)
    try:
        import wandb
    except ImportError:
        print("wandb is not installed; metrics go to metrics.jsonl only", file=sys.stderr)
        return None
    try:
        return wandb.init(
            name=name,
            config=config,
            dir=str(run_dir),
            mode=mode,  # type: ignore[arg-type]  # WANDB_MODE's value: wandb checks it
            id=wandb_run_id(run_dir),
            resume="allow",
            settings=wandb.Settings(init_timeout=30, console="off"),
            reinit="finish_previous",
            **kwargs,
        )
    except Exception as exc:
        if mode == "online":
            print(
                f"wandb: online init failed ({type(exc).__name__}); logging offline",
                file=sys.stderr,
            )
            return _init_wandb("offline", name, config, run_dir, kwargs)
        print(
            f"wandb: init failed ({type(exc).__name__}: {exc}); metrics go to metrics.jsonl only",
            file=sys.stderr,
        )
        return None


def parse_rows(text: str) -> tuple[list[dict[str, Any]], list[int]]:
    """The metric rows in a metrics.jsonl text, and the (1-based) numbers of the lines that
    were not rows.

    A line that is not a JSON object with a numeric ``step`` (a partial last line of a crashed
    or running run, a damaged line mid-file) is skipped and its number returned; blank lines
    are ignored.
    """
    rows, bad = [], []
    for no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad.append(no)
            continue
        step = row.get("step") if isinstance(row, dict) else None
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            bad.append(no)
            continue
        rows.append(row)
    return rows, bad


def describe_bad_lines(bad: list[int], text: str) -> str:
    """One sentence on the unparsable lines of a metrics.jsonl: a partial last line (a run that
    crashed or is still writing) is told apart from damaged lines mid-file."""
    last = max(
        (no for no, line in enumerate(text.splitlines(), start=1) if line.strip()), default=0
    )
    middle = [no for no in bad if no != last]
    parts = []
    if middle:
        shown = ", ".join(map(str, middle[:5])) + (
            f" and {len(middle) - 5} more" if len(middle) > 5 else ""
        )
        parts.append(
            f"line{'s' if len(middle) > 1 else ''} {shown} of metrics.jsonl "
            f"{'are' if len(middle) > 1 else 'is'} not a metrics row (damaged mid-file) and "
            f"{'were' if len(middle) > 1 else 'was'} ignored"
        )
    if last in bad:
        parts.append(
            f"line {last}, a partial last line, was ignored: the run crashed or is still writing"
        )
    return "; ".join(parts)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl as written (none if the file does not exist yet)."""
    if not Path(path).exists():
        return []
    return read_rows(path).rows


@dataclass(frozen=True)
class MetricsRows:
    """A metrics.jsonl read: its ``rows`` as written, the (1-based) numbers of the lines that
    were not rows, and ``note``, one sentence on those lines ("" when there are none)."""

    rows: list[dict[str, Any]]
    bad_lines: list[int]
    note: str


def read_rows(path: Path) -> MetricsRows:
    """Read a metrics.jsonl (the one reader; :func:`read_metrics` is its rows). Raises
    OSError (FileNotFoundError) when the file cannot be read."""
    text = Path(path).read_text(errors="replace")
    rows, bad = parse_rows(text)
    return MetricsRows(rows, bad, describe_bad_lines(bad, text) if bad else "")


def in_step_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows the way the trainer meant them: a row with the step of the row before is merged
    into it (an eval logged beside the train row), and a row with an earlier step starts a
    resumed run, whose rows replace the old ones from that step on."""
    out: list[dict[str, Any]] = []
    for r in rows:
        step = r[K.STEP]
        if out and step == out[-1][K.STEP]:
            out[-1].update(r)
            continue
        if out and step < out[-1][K.STEP]:
            out = [o for o in out if o[K.STEP] < step]
        out.append(dict(r))
    return out


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only rows with ``step <= last_step`` so a resumed run neither repeats nor skips a
    step."""
    if not path.exists():
        return
    keep = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
    tmp = path.with_suffix(".jsonl.tmp")
    try:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves the old file, never a temp file
        raise
