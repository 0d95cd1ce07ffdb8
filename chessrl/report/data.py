"""The report as data: a run directory read, replayed through the health monitor, summarised.

:func:`analyse` reads ``RUN_DIR/metrics.jsonl`` (with the one reader, :mod:`chessrl.metrics`)
and ``config.toml`` and replays the rows through :class:`chessrl.health.HealthMonitor`;
:func:`report_data` turns that into the plain dict that ``--json`` prints and the renderer
lays out.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from chessrl import keys as K
from chessrl.errors import UserError
from chessrl.health import HealthMonitor
from chessrl.metrics import in_step_order, read_rows
from chessrl.stats import elo_ci, wilson

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.toml"
PLOT_DIR = "report"
DEFAULT_WINDOW = 20  # TrainerConfig.health_window's default; used when config.toml is missing

# metrics summarised in "Training health" (those present in the run)
HEALTH_KEYS = (
    K.TRAIN_CLIP_FRACTION,
    K.TRAIN_RATIO_FIRST_EPOCH,
    K.TRAIN_RATIO_FIRST_EPOCH_MAXDEV,
    K.TRAIN_ESS,
    K.TRAIN_ENTROPY,
    K.TRAIN_ENTROPY_SAMPLE,
    K.TRAIN_KL_OLD_EXACT,
    K.TRAIN_KL_REF_EXACT,
    K.TRAIN_GRAD_NORM,
    K.TRAIN_PPO_EPOCHS_RUN,
    K.TRAIN_SKIPPED_STEPS,
    K.ROLLOUT_RETURN_MEAN,
    K.ROLLOUT_RETURN_STD,
    K.ROLLOUT_ZERO_STD_FRAC,
    K.ROLLOUT_GAME_LEN_MEAN,
    K.ROLLOUT_LOGPROB_DRIFT,
    K.TIME_STEP,
    K.TIME_OVERHEAD_FRAC,
)


# --- reading a run -------------------------------------------------------------------------


def read_run_metrics(run_dir: str | Path) -> tuple[list[dict[str, Any]], list[int]]:
    """Rows of ``RUN_DIR/metrics.jsonl`` in step order and the numbers of the lines that
    could not be parsed.

    Tolerant of a crashed or running run: a partial last line (or any unparsable line) is
    skipped and its number returned. Rows are put in step order the way the trainer meant
    them (:func:`chessrl.metrics.in_step_order`: an eval row merged into the train row of its
    step, a resumed run's rows replacing the old ones from its first step on). Raises
    :class:`UserError` when the directory or file is missing.
    """
    read = _read(Path(run_dir))
    return in_step_order(read.rows), read.bad_lines


def _read(run: Path):
    if not run.is_dir():
        raise UserError(
            f"{run}: no such run directory; give a directory made by 'chessrl run' "
            "(runs/<name>-<timestamp>/)"
        )
    path = run / METRICS_FILE
    try:
        return read_rows(path)
    except FileNotFoundError:
        raise UserError(
            f"{path}: no such file; the run has not logged a step yet "
            f"(or {run} is not a run directory)"
        ) from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the file ({exc.__class__.__name__}: {exc})") from None


def load_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl in step order (see :func:`read_run_metrics`)."""
    return read_run_metrics(run_dir)[0]


def _load_config(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """The run's resolved config, or {} and a note when it is missing or unreadable."""
    path = run_dir / CONFIG_FILE
    if not path.exists():
        return {}, f"{CONFIG_FILE} is missing; plugin options and planned steps are unknown"
    try:
        return tomllib.loads(path.read_text()), None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return {}, f"{CONFIG_FILE} could not be read ({exc.__class__.__name__}: {exc})"


@dataclass
class Run:
    """Everything a run's report is made of."""

    path: Path
    rows: list[dict[str, Any]]
    ignored_lines: list[int]
    ignored_note: str
    config: dict[str, Any]
    config_note: str | None
    monitor: HealthMonitor

    def series(self, key: str) -> tuple[list[int], list[float]]:
        xs, ys = [], []
        for r in self.rows:
            v = r.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                xs.append(r[K.STEP])
                ys.append(float(v))
        return xs, ys


def analyse(run_dir: str | Path, window: int | None = None) -> Run:
    """Read a run directory and replay its rows through a health monitor."""
    path = Path(run_dir)
    read = _read(path)
    rows = in_step_order(read.rows)
    if not rows:
        raise UserError(
            f"{path / METRICS_FILE}: no complete rows yet; wait for the first step to be logged"
        )
    config, note = _load_config(path)
    if window is None:
        window = config.get("trainer", {}).get("health_window", DEFAULT_WINDOW)
        window = window if isinstance(window, int) and window >= 2 else DEFAULT_WINDOW
    monitor = HealthMonitor(window)
    for row in rows:
        monitor.update(row)
    return Run(path, rows, read.bad_lines, read.note, config, note, monitor)


# --- the report as data ------------------------------------------------------------------


def build_report(run_dir: str | Path, window: int | None = None) -> dict[str, Any]:
    """Findings and summary numbers of a run, as plain JSON-able data (NaN/inf become None).

    ``window`` overrides ``trainer.health_window`` from the run's config.toml.
    """
    return json_safe(report_data(analyse(run_dir, window)))


def report_data(run: Run) -> dict[str, Any]:
    mon = run.monitor
    current = mon.findings()
    current_keys = {f.key for f in current}
    planned = run.config.get("trainer", {}).get("steps")
    flags: dict[str, list[str]] = {}
    for f in current:
        flags.setdefault(f.subject, []).append(f.code)
    t = mon.return_trend
    reward_trend = (
        None
        if t is None
        else {
            "slope": t.slope,
            "lo": t.lo,
            "hi": t.hi,
            "verdict": t.verdict,
            "windows": t.n,
            "window": mon.window,
        }
    )
    verdict, basis = mon.learning_verdict()
    learning = {
        "verdict": verdict,
        "basis": basis,
        "eval_trends": [asdict(t) | {"text": t.describe()} for t in mon.eval_trends().values()],
    }
    last = mon.last_step
    return {
        "run_dir": str(run.path),
        "name": run.path.name,
        "rows": len(run.rows),
        "first_step": mon.first_step,
        "last_step": last,
        "planned_steps": planned if isinstance(planned, int) else None,
        "complete": bool(isinstance(planned, int) and last is not None and last >= planned),
        "ignored_lines": len(run.ignored_lines),
        "ignored_line_numbers": run.ignored_lines,
        "ignored_note": run.ignored_note,
        "config_note": run.config_note,
        "window": mon.window,
        "findings": [f.to_dict() for f in current],
        "not_evaluated": [
            {"code": n.code, "subject": n.subject, "reason": n.reason, "text": n.line()}
            for n in mon.not_evaluated()
        ],
        "earlier_findings": [f.to_dict() for f in mon.raised() if f.key not in current_keys],
        "budget": _budget(mon, flags),
        "plugins": _plugins(run, flags),
        "training": _training(mon, flags),
        "reward_trend": reward_trend,
        "learning": learning,
        "evaluation": _evaluation(mon, flags),
    }


def _budget(mon: HealthMonitor, flags: dict[str, list[str]]) -> list[dict[str, Any]]:
    budget = []
    for term in mon.budget_terms():
        entry: dict[str, Any] = {"term": term}
        coef = mon.stats.get(K.budget_key(term, "coef"))
        entry["coef"] = coef.last if coef else math.nan
        for metric in ("value_share", "grad_share", "cos_objective"):
            entry[f"{metric}_window"] = mon.window_mean(K.budget_key(term, metric))
            entry[f"{metric}_run"] = mon.run_mean(K.budget_key(term, metric))
        entry["flags"] = flags.get(term, [])
        budget.append(entry)
    return budget


def _plugins(run: Run, flags: dict[str, list[str]]) -> list[dict[str, Any]]:
    mon = run.monitor
    enabled = list(run.config.get("plugins", {}))
    plugins = []
    for name in sorted(set(mon.plugin_names()) | set(enabled), key=lambda n: (n not in enabled, n)):
        s = mon.plugin_summary(name)
        plugins.append(
            {
                "name": name,
                "kind": s.kind,
                "enabled": name in enabled if enabled else None,
                "steps": s.steps,
                "acted": s.acted,
                "steps_since_acted": s.steps_since_acted,
                "at_bound_frac": s.at_bound_frac,
                "at_bound_frac_window": s.at_bound_frac_window,
                "metrics": s.metrics,
                "flags": flags.get(name, []),
                "declared": [
                    {"key": d.key, "kind": d.kind, "value": d.value, "text": d.describe()}
                    for d in mon.declared(name)
                ],
            }
        )
    return plugins


def _training(mon: HealthMonitor, flags: dict[str, list[str]]) -> list[dict[str, Any]]:
    training = []
    for key in HEALTH_KEYS:
        st = mon.stats.get(key)
        if st is None:
            continue
        training.append(
            {
                "key": key,
                "first": st.first,
                "last": st.last,
                "window_mean": mon.window_mean(key),
                "run_mean": st.mean,
                "min": st.min,
                "max": st.max,
                "flags": flags.get(key, []),
            }
        )
    return training


def _evaluation(mon: HealthMonitor, flags: dict[str, list[str]]) -> dict[str, Any]:
    evaluation: dict[str, Any] = {}
    for opp, evals in mon.eval_history().items():
        items = []
        for step, score, games in evals:
            lo, hi = wilson(score * games, games)
            elo, elo_lo, elo_hi = elo_ci(score, games)
            items.append(
                {
                    "step": step,
                    "score": score,
                    "games": games,
                    "lo": lo,
                    "hi": hi,
                    "elo": elo,
                    "elo_lo": elo_lo,
                    "elo_hi": elo_hi,
                }
            )
        total_games = sum(g for _, _, g in evals)
        pooled = sum(s * g for _, s, g in evals) / total_games
        plo, phi = wilson(pooled * total_games, total_games)
        evaluation[opp] = {
            "evals": items,
            "pooled": {"score": pooled, "games": total_games, "lo": plo, "hi": phi},
            "flags": flags.get(K.eval_series_key(opp), []),
        }
    return evaluation


# --- several runs --------------------------------------------------------------------------


def run_labels(runs: list[Run]) -> list[str]:
    """Short, distinct names for the runs (their directory names, else their paths)."""
    names = [r.path.name for r in runs]
    return names if len(set(names)) == len(names) else [str(r.path) for r in runs]


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in table.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}.") if v else {f"{prefix}{k}": "(enabled)"})
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(configs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Dotted config keys whose values differ between the runs: key -> one value per run
    (None: not set)."""
    flat = [_flatten(c) for c in configs]
    keys = sorted({k for f in flat for k in f})
    return {
        k: [f.get(k) for f in flat]
        for k in keys
        if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1
    }


def compare_report(run_dirs: Sequence[str | Path], window: int | None = None) -> dict[str, Any]:
    """Each run's :func:`build_report` data and the config differences, as JSON-able data."""
    runs = [analyse(d, window) for d in run_dirs]
    return json_safe(
        {
            "runs": [report_data(r) for r in runs],
            "config_differences": config_differences([r.config for r in runs]),
        }
    )


# --- formatting helpers ------------------------------------------------------------------


def fmt(x: Any, spec: str = ".4g") -> str:
    """A number in a report cell or note ("—" for None and NaN)."""
    if x is None:
        return "—"
    if isinstance(x, float) and not math.isfinite(x):
        return "—" if math.isnan(x) else ("+inf" if x > 0 else "-inf")
    if isinstance(x, int) and not isinstance(x, bool) and spec == ".4g":
        return str(x)
    return format(x, spec)


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def json_safe(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x
