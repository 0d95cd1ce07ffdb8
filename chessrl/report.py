"""``chessrl report RUN_DIR``: a post-mortem of a run, written from its files alone.

The report replays ``RUN_DIR/metrics.jsonl`` through the same :class:`HealthMonitor` the
trainer uses, so the findings match what training printed, and adds the loss budget, the
plugins' behaviour, training health, evaluations with error bars, and plots. It works on a
finished, crashed or still-running run. See docs/diagnostics.md, "Reading a report".
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chessrl.errors import UserError
from chessrl.health import CLIP_HIGH, OBJECTIVE, RETURN_KEY, HealthMonitor, eval_key
from chessrl.metrics import describe_bad_lines, parse_rows
from chessrl.stats import block_means, elo_ci, trend, wilson

__all__ = ["load_metrics", "read_metrics", "build_report", "write_report", "compare_report", "write_comparison",
           "config_differences", "main"]

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.toml"
PLOT_DIR = "report"
DEFAULT_WINDOW = 20  # TrainerConfig.health_window's default; used when config.toml is missing

# metrics summarised in "Training health" (those present in the run)
HEALTH_KEYS = (
    "train/clip_fraction", "train/ratio_first_epoch", "train/ratio_first_epoch_maxdev", "train/ess",
    "train/entropy", "train/entropy_sample", "train/kl_old_exact", "train/kl_ref_exact", "train/grad_norm",
    "train/ppo_epochs_run", "train/skipped_steps", "rollout/return_mean", "rollout/return_std",
    "rollout/zero_std_frac", "rollout/game_len_mean", "rollout/logprob_drift", "time/step", "time/overhead_frac",
)


# --- reading a run -------------------------------------------------------------------------

def read_metrics(run_dir: str | Path) -> tuple[list[dict[str, Any]], list[int]]:
    """Rows of ``RUN_DIR/metrics.jsonl`` and the numbers of the lines that could not be parsed.

    Tolerant of a crashed or running run: a partial last line (or any unparsable line) is
    skipped and its number returned. Rows are put in step order the way the trainer meant them: a row
    with the step of the row before is merged into it (an eval logged beside the train row),
    and a row with an earlier step starts a resumed run, whose rows replace the old ones
    from that step on. Raises :class:`UserError` when the directory or file is missing.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"{run_dir}: no such run directory; give a directory made by 'chessrl run' "
                        "(runs/<name>-<timestamp>/)")
    path = run / METRICS_FILE
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; the run has not logged a step yet (or {run_dir} is not a run directory)") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the file ({exc.__class__.__name__}: {exc})") from None
    parsed, bad = parse_rows(text)
    rows: list[dict[str, Any]] = []
    for row in parsed:
        step = row["step"]
        if rows and step == rows[-1]["step"]:
            rows[-1].update(row)
            continue
        if rows and step < rows[-1]["step"]:
            rows = [r for r in rows if r["step"] < step]
        rows.append(row)
    return rows, bad


def load_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl (see :func:`read_metrics`)."""
    return read_metrics(run_dir)[0]


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
class _Run:
    """Everything the report is made of."""

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
                xs.append(r["step"])
                ys.append(float(v))
        return xs, ys


def _analyse(run_dir: str | Path, window: int | None = None) -> _Run:
    path = Path(run_dir)
    rows, bad = read_metrics(path)
    if not rows:
        raise UserError(f"{path / METRICS_FILE}: no complete rows yet; wait for the first step to be logged")
    config, note = _load_config(path)
    if window is None:
        window = config.get("trainer", {}).get("health_window", DEFAULT_WINDOW)
        window = window if isinstance(window, int) and window >= 2 else DEFAULT_WINDOW
    monitor = HealthMonitor(window)
    for row in rows:
        monitor.update(row)
    text = (path / METRICS_FILE).read_text(errors="replace") if bad else ""
    return _Run(path, rows, bad, describe_bad_lines(bad, text) if bad else "", config, note, monitor)


# --- the report as data ------------------------------------------------------------------

def build_report(run_dir: str | Path, window: int | None = None) -> dict[str, Any]:
    """Findings and summary numbers of a run, as plain JSON-able data (NaN/inf become None).

    ``window`` overrides ``trainer.health_window`` from the run's config.toml.
    """
    return _json_safe(_report_data(_analyse(run_dir, window)))


def _report_data(run: _Run) -> dict[str, Any]:
    mon = run.monitor
    current = mon.findings()
    current_keys = {f.key for f in current}
    planned = run.config.get("trainer", {}).get("steps")
    enabled = list(run.config.get("plugins", {}))
    flags: dict[str, list[str]] = {}
    for f in current:
        flags.setdefault(f.subject, []).append(f.code)

    budget = []
    for term in mon.budget_terms():
        entry: dict[str, Any] = {"term": term}
        coef = mon.stats.get(f"budget/{term}/coef")
        entry["coef"] = coef.last if coef else math.nan
        for metric in ("value_share", "grad_share", "cos_objective"):
            entry[f"{metric}_window"] = mon.window_mean(f"budget/{term}/{metric}")
            entry[f"{metric}_run"] = mon.run_mean(f"budget/{term}/{metric}")
        entry["flags"] = flags.get(term, [])
        budget.append(entry)

    plugins = []
    for name in sorted(set(mon.plugin_names()) | set(enabled), key=lambda n: (n not in enabled, n)):
        s = mon.plugin_summary(name)
        plugins.append({
            "name": name, "kind": s.kind, "enabled": name in enabled if enabled else None,
            "steps": s.steps, "acted": s.acted, "steps_since_acted": s.steps_since_acted,
            "at_bound_frac": s.at_bound_frac, "at_bound_frac_window": s.at_bound_frac_window,
            "metrics": s.metrics, "flags": flags.get(name, []),
            "declared": [{"key": d.key, "kind": d.kind, "value": d.value, "text": d.describe()}
                         for d in mon.declared(name)],
        })

    training = []
    for key in HEALTH_KEYS:
        st = mon.stats.get(key)
        if st is None:
            continue
        training.append({"key": key, "first": st.first, "last": st.last, "window_mean": mon.window_mean(key),
                         "run_mean": st.mean, "min": st.min, "max": st.max, "flags": flags.get(key, [])})
    t = mon.return_trend
    reward_trend = None if t is None else {"slope": t.slope, "lo": t.lo, "hi": t.hi, "verdict": t.verdict,
                                           "windows": t.n, "window": mon.window}

    verdict, basis = mon.learning_verdict()
    learning = {"verdict": verdict, "basis": basis,
                "eval_trends": [asdict(t) | {"text": t.describe()} for t in mon.eval_trends().values()]}

    evaluation: dict[str, Any] = {}
    for opp, evals in mon.eval_history().items():
        items = []
        for step, score, games in evals:
            lo, hi = wilson(score * games, games)
            elo, elo_lo, elo_hi = elo_ci(score, games)
            items.append({"step": step, "score": score, "games": games, "lo": lo, "hi": hi,
                          "elo": elo, "elo_lo": elo_lo, "elo_hi": elo_hi})
        total_games = sum(g for _, _, g in evals)
        pooled = sum(s * g for _, s, g in evals) / total_games
        plo, phi = wilson(pooled * total_games, total_games)
        evaluation[opp] = {"evals": items, "pooled": {"score": pooled, "games": total_games, "lo": plo, "hi": phi},
                           "flags": flags.get(eval_key(opp), [])}

    last = mon.last_step
    return {
        "run_dir": str(run.path), "name": run.path.name,
        "rows": len(run.rows), "first_step": mon.first_step, "last_step": last,
        "planned_steps": planned if isinstance(planned, int) else None,
        "complete": bool(isinstance(planned, int) and last is not None and last >= planned),
        "ignored_lines": len(run.ignored_lines), "ignored_line_numbers": run.ignored_lines,
        "ignored_note": run.ignored_note, "config_note": run.config_note, "window": mon.window,
        "findings": [f.to_dict() for f in current],
        "not_evaluated": [{"code": n.code, "subject": n.subject, "reason": n.reason, "text": n.line()}
                          for n in mon.not_evaluated()],
        "earlier_findings": [f.to_dict() for f in mon.raised() if f.key not in current_keys],
        "budget": budget, "plugins": plugins, "training": training, "reward_trend": reward_trend,
        "learning": learning, "evaluation": evaluation,
    }


# --- plots -------------------------------------------------------------------------------
# A plot is drawn only when it shows something: a series that is constant (KL to a policy
# synced every step, a clip fraction of 0, a fixed coefficient) is left out and said in one
# line instead, and an evaluation plot needs two evaluations. Noisy series are drawn faint
# with their rolling mean on top; step axes have integer ticks.

@dataclass
class Plot:
    """One plot of a report: drawn (``path``) or skipped (``path`` None); ``note`` says what the
    plot leaves out, or why it was skipped."""

    title: str
    path: Path | None
    note: str = ""


_STYLE = {"min": ":", "max": "--", "target": "-.", "floor": "--"}
SMOOTH_MIN_POINTS = 10   # shorter series are drawn as they are


def _figure(title: str, ylabel: str):
    from matplotlib.figure import Figure  # Agg canvas by default: no pyplot, no global state
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, 3.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are integers: no "22.5"
    return fig, ax


def _save(fig, out: Path, name: str) -> Path:
    path = out / name
    fig.savefig(path)
    return path


def _constant(ys: list[float]) -> bool:
    return bool(ys) and max(ys) - min(ys) <= 1e-12 * max(1.0, abs(max(ys)), abs(min(ys)))


def _smooth_window(n: int, window: int) -> int:
    """Points per rolling mean for a series of ``n`` points (0: draw it as it is)."""
    return min(window, max(2, n // 5)) if n >= SMOOTH_MIN_POINTS else 0


def _rolling(ys: list[float], k: int) -> list[float]:
    """Trailing mean of ``k`` points (fewer at the start)."""
    out, total = [], 0.0
    for i, y in enumerate(ys):
        total += y - (ys[i - k] if i >= k else 0.0)
        out.append(total / min(i + 1, k))
    return out


def _curve(ax, xs: list[int], ys: list[float], label: str, window: int, color: str | None = None,
           smooth: bool = True) -> str:
    """Draw a series: faint, with its rolling mean on top, when long enough to be noisy; returns its colour."""
    k = _smooth_window(len(ys), window) if smooth else 0
    if k:
        raw, = ax.plot(xs, ys, alpha=0.25, linewidth=0.8, color=color)
        ax.plot(xs, _rolling(ys, k), color=raw.get_color(), linewidth=1.6, label=f"{label} (mean of {k} steps)")
        return raw.get_color()
    line, = ax.plot(xs, ys, marker="o" if len(xs) < SMOOTH_MIN_POINTS else None, markersize=3, label=label,
                    color=color)
    return line.get_color()


def _hline(ax, y: float | None, label: str, color: str = "tab:red", style: str = "--") -> None:
    if y is not None and math.isfinite(y):
        ax.axhline(y, color=color, linestyle=style, linewidth=1, label=label)


def _declared_lines(ax, run: _Run, keys: set[str], colors: dict[str, str]) -> list[str]:
    """Draw the lines plugins declared on ``keys`` (a bound, a target, a floor); returns their labels."""
    labels = []
    for d in run.monitor.declared():
        if d.key not in keys:
            continue
        label = f"{d.plugin}: {d.describe()}"
        color, style = colors.get(d.key, "tab:red"), _STYLE[d.kind]
        if d.constant:
            _hline(ax, d.value, label, color=color, style=style)
        else:
            ax.plot(*run.series(d.metric), color=color, linestyle=style, linewidth=1, drawstyle="steps-post",
                    label=label)
        labels.append(label)
    return labels


def _declared_text(run: _Run, key: str) -> str:
    lines = [f"{d.kind} {_f(d.value)}" for d in run.monitor.declared() if d.key == key]
    return f" (declared {', '.join(lines)})" if lines else ""


def _constant_text(run: _Run, keys: list[str]) -> str:
    return "; ".join(f"{k} is {_f(run.series(k)[1][0])} at every step{_declared_text(run, k)}" for k in keys)


def _same_policy(run: _Run) -> bool:
    """Whether the loss sees the policy that sampled: one PPO epoch on a policy synced every step."""
    t = run.config.get("trainer", {})
    return t.get("sync_every", 1) == 1 and t.get("ppo_steps", 1) == 1 and bool(run.config)


def _lines_plot(run: _Run, out: Path, covered: set[str], title: str, ylabel: str, file: str,
                keys: list[str], labels: dict[str, str] | None = None, smooth: bool = True,
                why_constant: str = "", aliases: dict[str, str] | None = None) -> Plot | None:
    """A plot of ``keys`` with the lines declared on them; constant keys are named, not drawn.

    ``aliases`` maps a key left out because it repeats another (``kept``) to that key: its
    declared lines are drawn in the colour of ``kept``.
    """
    keys = [k for k in keys if run.series(k)[0]]
    if not keys:
        return None
    aliases = aliases or {}
    covered.update(keys, aliases)
    flat = [k for k in keys if _constant(run.series(k)[1])]
    note = _constant_text(run, flat) + (f" ({why_constant})" if flat and why_constant else "")
    moving = [k for k in keys if k not in flat]
    if not moving:
        return Plot(title, None, note)
    fig, ax = _figure(title, ylabel)
    colors = {k: _curve(ax, *run.series(k), (labels or {}).get(k, k), run.monitor.window, smooth=smooth)
              for k in moving}
    colors.update({dup: colors[kept] for dup, kept in aliases.items() if kept in colors})
    drawn = _declared_lines(ax, run, set(colors), colors)
    values = [v for line in ax.get_lines() for v in line.get_ydata()]
    if ylabel == "coefficient" and values and min(values) > 0 and max(values) / min(values) >= 10:
        ax.set_yscale("log")  # only when the coefficients span a decade or more
    ax.legend(fontsize="small")
    parts = [f"lines declared by plugins: {', '.join(drawn)}" if drawn else "",
             f"not drawn, constant: {note}" if note else ""]
    return Plot(title, _save(fig, out, file), "; ".join(filter(None, parts)))


def _plot_grad_shares(run: _Run, out: Path, covered: set[str]) -> Plot | None:
    terms = run.monitor.budget_terms()
    steps = sorted({r["step"] for r in run.rows if any(f"budget/{t}/grad_share" in r for t in terms)})
    if not steps:
        return None
    title = "Gradient share per loss term"
    if all(_constant(run.series(f"budget/{t}/grad_share")[1]) for t in terms):
        return Plot(title, None, "the grad share of every term is constant: " + ", ".join(
            f"{t} {_f(run.series(f'budget/{t}/grad_share')[1][0], '.3f')}" for t in terms))
    by_step = {r["step"]: r for r in run.rows}
    ys = [[float(by_step[s].get(f"budget/{t}/grad_share") or 0.0) for s in steps] for t in terms]
    fig, ax = _figure(title, "grad_share")
    ax.stackplot(steps, ys, labels=terms, alpha=0.85)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize="small")
    return Plot(title, _save(fig, out, "grad_shares.png"))


def _plot_coefficients(run: _Run, out: Path, covered: set[str]) -> Plot | None:
    # the coefficients plugins report (after their step's adjustment), and a term's budget coef
    # (the value its step trained with) only when its plugin reports none
    candidates = [f"plugin/{name}/coef" for name in run.monitor.plugin_names()]
    candidates += [f"budget/{t}/coef" for t in run.monitor.budget_terms()
                   if t != OBJECTIVE and f"plugin/{t}/coef" not in run.monitor.stats]
    keys: list[str] = []
    labels: dict[str, str] = {}
    aliases: dict[str, str] = {}   # a plugin's coef that repeats a term's (a controller's, a term's own)
    for k in candidates:
        label = f"{k.split('/')[1]} coef" if k.startswith("plugin/") else f"{k.split('/')[1]} (budget)"
        same = next((kept for kept in keys if run.series(kept) == run.series(k)), None)
        if same is None:
            keys.append(k)
            labels[k] = label
        else:
            aliases[k] = same
            labels[same] += f" = {label}"
    return _lines_plot(run, out, covered, "Coefficients", "coefficient", "coefficients.png", keys, labels,
                       smooth=False, aliases=aliases)


def _plot_entropy(run: _Run, out: Path, covered: set[str]) -> Plot | None:
    return _lines_plot(run, out, covered, "Policy entropy", "nats", "entropy.png",
                       ["train/entropy", "train/entropy_sample"])


def _plot_kl(run: _Run, out: Path, covered: set[str]) -> Plot | None:
    keys = sorted(k for k in run.monitor.stats if k.startswith("train/kl_"))
    why = ("the loss sees the policy that sampled: trainer.sync_every = 1 and trainer.ppo_steps = 1"
           if _same_policy(run) and any(k.startswith("train/kl_old") for k in keys) else "")
    return _lines_plot(run, out, covered, "KL divergence", "nats", "kl.png", keys, why_constant=why)


def _plot_clip(run: _Run, out: Path, covered: set[str]) -> Plot | None:
    xs, ys = run.series("train/clip_fraction")
    if not xs:
        return None
    covered.add("train/clip_fraction")
    title = "Clip fraction"
    if _constant(ys):
        why = " (one PPO epoch on the policy that sampled: the ratio is 1, nothing to clip)" if _same_policy(run) else ""
        return Plot(title, None, _constant_text(run, ["train/clip_fraction"]) + why)
    fig, ax = _figure(title, "fraction of plies")
    _curve(ax, xs, ys, "train/clip_fraction", run.monitor.window)
    _hline(ax, CLIP_HIGH, f"clip_high threshold {CLIP_HIGH}")
    ax.set_ylim(0, max(CLIP_HIGH * 1.5, max(ys) * 1.1))
    ax.legend(fontsize="small")
    return Plot(title, _save(fig, out, "clip_fraction.png"))


def _plot_reward(run: _Run, out: Path, covered: set[str]) -> Plot | None:
    xs, ys = run.series(RETURN_KEY)
    if not xs:
        return None
    covered.add(RETURN_KEY)
    title = "Returns"
    if _constant(ys):
        return Plot(title, None, _constant_text(run, [RETURN_KEY]))
    w = run.monitor.window
    fig, ax = _figure(title, RETURN_KEY)
    _curve(ax, xs, ys, RETURN_KEY, w)
    bx, by = block_means(xs, ys, w)
    if bx:
        ax.plot(bx, by, "o", markersize=4, color="black", label=f"window means ({w} steps)")
    t = trend(xs, ys, w)
    if math.isfinite(t.slope):
        ax.plot([bx[0], bx[-1]], [t.intercept + t.slope * bx[0], t.intercept + t.slope * bx[-1]], "k--",
                label=f"trend: {t.verdict} ({t.slope:+.2g}/step)")
    ax.legend(fontsize="small")
    return Plot(title, _save(fig, out, "reward.png"))


def _plot_eval(run: _Run, out: Path, opp: str, evals: list[tuple[int, float, int]]) -> Plot:
    title = f"Evaluation: {opp}" if "/" in opp else f"Evaluation vs {opp}"
    if len(evals) < 2:
        step, score, games = evals[0]
        return Plot(title, None, f"one evaluation ({eval_key(opp)} {score:.3f} at step {step}, {games} "
                                 f"{'items' if '/' in opp else 'games'}): see the table above")
    fig, ax = _figure(title, eval_key(opp))
    steps = [e[0] for e in evals]
    scores = [e[1] for e in evals]
    bands = [wilson(s * g, g) for _, s, g in evals]
    ax.fill_between(steps, [b[0] for b in bands], [b[1] for b in bands], alpha=0.25, label="Wilson 95% CI")
    ax.plot(steps, scores, "o-", label="score")
    total = sum(e[2] for e in evals)
    pooled = sum(s * g for _, s, g in evals) / total
    _hline(ax, pooled, f"pooled score {pooled:.3f} ({total} games)", color="gray")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="small")
    return Plot(title, _save(fig, out, f"eval_{_safe_name(opp)}.png"))


def _plot_declared(run: _Run, out: Path, covered: set[str]) -> list[Plot]:
    """A plot for each metric a plugin declared lines on that no plot above shows (any plugin)."""
    plots: list[Plot] = []
    by_key: dict[str, str] = {}
    for d in run.monitor.declared():
        by_key.setdefault(d.key, d.plugin)
    for key, plugin in by_key.items():
        if key in covered:
            continue
        short = key[len(f"plugin/{plugin}/"):] if key.startswith(f"plugin/{plugin}/") else key
        if not run.series(key)[0]:
            plots.append(Plot(f"{plugin}: {short}", None, f"{plugin} declares lines on {key}, which is not logged"))
            continue
        p = _lines_plot(run, out, covered, f"{plugin}: {short}", short, f"declared_{_safe_name(key)}.png", [key])
        if p is not None:
            plots.append(p)
    return plots


def _plots(run: _Run, out: Path) -> list[Plot]:
    out.mkdir(exist_ok=True)
    covered: set[str] = set()
    plots = [p for p in (f(run, out, covered) for f in (_plot_grad_shares, _plot_coefficients, _plot_entropy,
                                                         _plot_kl, _plot_clip, _plot_reward)) if p is not None]
    plots += [_plot_eval(run, out, opp, evals) for opp, evals in run.monitor.eval_history().items()]
    return plots + _plot_declared(run, out, covered)


# --- rendering ---------------------------------------------------------------------------
# The report is a list of blocks rendered twice, to Markdown and to HTML, so both say the same.

Block = tuple  # ("h1"|"h2"|"h3"|"p", text) | ("ul", [text]) | ("table", headers, rows) | ("img", path, alt)


def _blocks(data: dict[str, Any], plots: list[Plot]) -> list[Block]:
    w = data["window"]
    b: list[Block] = [("h1", f"Run report: {data['name']}")]
    first = data["first_step"]
    status = (f"steps {1 if first == 0 else first}–{data['last_step']}"
              + (f" of {data['planned_steps']} planned" if data["planned_steps"] else "")
              + ("" if data["complete"] or not data["planned_steps"] else " (stopped early or still running)")
              + f"; health window {w} steps"
              + ("; step 0 is the initial policy's evaluation." if first == 0 else "."))
    b.append(("p", status))
    if data["ignored_lines"]:
        b.append(("p", data["ignored_note"][0].upper() + data["ignored_note"][1:] + "."))
    if data["config_note"]:
        b.append(("p", data["config_note"] + "."))
    b.append(("p", _learning_line(data)))

    b.append(("h2", "Findings"))
    b += _findings_blocks(data)

    b.append(("h2", "Loss budget"))
    if data["budget"]:
        b.append(("p", f"Mean over the last {w} steps (window) and over the run. A term's share of the loss "
                       "value is not its share of the gradient; grad share and cos decide (docs/diagnostics.md)."))
        b.append(("table", ["term", "coef", "value share (window / run)", "grad share (window / run)",
                            "cos objective (window / run)", "flags"],
                  [[t["term"], _f(t["coef"]), f"{_f(t['value_share_window'], '.3f')} / {_f(t['value_share_run'], '.3f')}",
                    f"{_f(t['grad_share_window'], '.3f')} / {_f(t['grad_share_run'], '.3f')}",
                    f"{_f(t['cos_objective_window'], '.3f')} / {_f(t['cos_objective_run'], '.3f')}",
                    ", ".join(t["flags"])] for t in data["budget"]]))
    else:
        b.append(("p", "No budget/ metrics were logged (trainer.budget_every = 0?)."))

    b.append(("h2", "Plugins"))
    if data["plugins"]:
        b.append(("table", ["plugin", "kind", "steps", "acted", "steps since acted", "at bound (run / window)",
                            "last metrics", "declared lines", "flags"],
                  [[p["name"] + ("" if p["enabled"] is not False else " (not in config)"), p["kind"], p["steps"],
                    p["acted"] if p["kind"] != "term" else "—",
                    "never" if p["steps_since_acted"] is None and p["kind"] != "term" else _f(p["steps_since_acted"]),
                    f"{_f(p['at_bound_frac'], '.0%')} / {_f(p['at_bound_frac_window'], '.0%')}",
                    ", ".join(f"{k}={_f(v)}" for k, v in sorted(p["metrics"].items())),
                    ", ".join(d["text"] for d in p["declared"]), ", ".join(p["flags"])] for p in data["plugins"]]))
    else:
        b.append(("p", "No plugins enabled."))

    b.append(("h2", "Training health"))
    if data["training"]:
        b.append(("table", ["metric", "first", f"last {w} steps", "run mean", "min", "max", "last", "flags"],
                  [[t["key"], _f(t["first"]), _f(t["window_mean"]), _f(t["run_mean"]), _f(t["min"]), _f(t["max"]),
                    _f(t["last"]), ", ".join(t["flags"])] for t in data["training"]]))
    rt = data["reward_trend"]
    if rt and rt["windows"] and rt["windows"] >= 3:
        b.append(("p", f"Reward trend: {RETURN_KEY} is **{rt['verdict']}**, slope {_f(rt['slope'], '+.3g')}/step "
                       f"(95% CI {_f(rt['lo'], '+.3g')} to {_f(rt['hi'], '+.3g')}) over {rt['windows']} windows of {w} steps."))
    else:
        b.append(("p", f"Reward trend: fewer than 3 windows of {w} steps of {RETURN_KEY}; no verdict."))

    b.append(("h2", "Evaluation"))
    if data["evaluation"]:
        for opp, ev in data["evaluation"].items():
            p = ev["pooled"]
            b.append(("p", f"**{opp}**: pooled score {_f(p['score'], '.3f')} over {p['games']} games "
                           f"(95% CI {_f(p['lo'], '.3f')}–{_f(p['hi'], '.3f')})."
                           + (f" Flags: {', '.join(ev['flags'])}." if ev["flags"] else "")))
            b.append(("table", ["step", "games", "score", "95% CI", "Elo diff", "Elo 95% CI"],
                      [[e["step"], e["games"], _f(e["score"], ".3f"), f"{_f(e['lo'], '.3f')}–{_f(e['hi'], '.3f')}",
                        *_elo_cells(e["elo"], e["elo_lo"], e["elo_hi"])] for e in ev["evals"]]))
    else:
        b.append(("p", "No evaluations were logged (trainer.eval_every = 0?)."))

    b.append(("h2", "Plots"))
    b += _plot_blocks(plots)
    return b


def _findings_blocks(data: dict[str, Any]) -> list[Block]:
    """Findings, the findings that no longer hold, and the rules that could not run yet."""
    b: list[Block] = []
    pending = data["not_evaluated"]
    if data["findings"]:
        b.append(("ul", [f"**{f['severity']}** `{f['code']}` — {f['message']}" for f in data["findings"]]))
    elif pending:
        b.append(("p", f"No findings from the rules that ran; {len(pending)} rule check(s) could not run yet (below)."))
    else:
        b.append(("p", "No findings: every health rule passed."))
    if data["earlier_findings"]:
        b.append(("p", "Raised during the run, no longer holding at its end:"))
        b.append(("ul", [f"step {f['step']}: **{f['severity']}** `{f['code']}` — {f['message']}"
                         for f in data["earlier_findings"]]))
    if pending:
        b.append(("p", f"Not evaluated yet (the run is too short for them; `--window N` judges on a shorter window):"))
        b.append(("ul", [n["text"] for n in pending]))
    return b


def _plot_blocks(plots: list[Plot]) -> list[Block]:
    b: list[Block] = []
    for p in plots:
        if p.path is not None:
            b.append(("img", p.path, p.title))
            if p.note:
                b.append(("p", p.note[0].upper() + p.note[1:] + "."))
    skipped = [p for p in plots if p.path is None]
    if skipped:
        b.append(("p", "Not plotted, nothing to show:"))
        b.append(("ul", [f"{p.title}: {p.note}." for p in skipped]))
    if not plots:
        b.append(("p", "No plottable metrics."))
    return b


def _learning_line(data: dict[str, Any]) -> str:
    """The report's answer to "is it learning?", and what it rests on."""
    ln, rt = data["learning"], data["reward_trend"]
    if ln["verdict"] is None:
        return ("Learning: **no verdict yet** (fewer than two evaluations and fewer than 3 windows of "
                f"{RETURN_KEY}).")
    if ln["basis"] == "evaluation":
        return (f"Learning: **{ln['verdict']}**, judged on evaluations against fixed opponents (first vs last, "
                "95% CI of the difference): " + "; ".join(t["text"] for t in ln["eval_trends"]) + ".")
    return (f"Learning: **{ln['verdict']}**, judged on the reward trend (no evaluations): {RETURN_KEY} slope "
            f"{_f(rt['slope'], '+.3g')}/step (95% CI {_f(rt['lo'], '+.3g')} to {_f(rt['hi'], '+.3g')}).")


def _render_md(blocks: list[Block], base: Path) -> str:
    out: list[str] = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h1":
            out.append(f"# {blk[1]}")
        elif kind == "h2":
            out.append(f"## {blk[1]}")
        elif kind == "h3":
            out.append(f"### {blk[1]}")
        elif kind == "p":
            out.append(blk[1])
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in blk[1]))
        elif kind == "table":
            headers, rows = blk[1], blk[2]
            lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{blk[2]}]({blk[1].relative_to(base).as_posix()})")
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    """Escape text and turn the two Markdown marks the report uses (**bold**, `code`) into tags."""
    out: list[str] = []
    bold = False
    parts = html.escape(str(text)).split("`")
    for i, part in enumerate(parts):
        if i % 2 == 1:
            out.append(f"<code>{part}</code>")
            continue
        segs = part.split("**")
        for j, seg in enumerate(segs):
            if j:
                out.append("</b>" if bold else "<b>")
                bold = not bold
            out.append(seg)
    return "".join(out) + ("</b>" if bold else "")


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f3f3f3}code{background:#f3f3f3;padding:0 .2em}img{max-width:100%;display:block;margin:1em 0}"""


def _render_html(blocks: list[Block], title: str) -> str:
    """One self-contained page: the plots are embedded as data URIs, so it can be mailed alone."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"]
    for blk in blocks:
        kind = blk[0]
        if kind in ("h1", "h2", "h3", "p"):
            out.append(f"<{kind}>{_inline_html(blk[1])}</{kind}>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in blk[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in blk[1])
            body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in blk[2])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(blk[1].read_bytes()).decode("ascii")
            out.append(f'<img src="data:image/png;base64,{data}" alt="{html.escape(blk[2])}">')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(run_dir: str | Path, window: int | None = None) -> list[Path]:
    """Write ``report.md``, ``report.html`` and ``report/*.png`` into the run directory.

    Returns the paths written (the two documents first, then the plots drawn). A plot whose
    metrics are absent or constant is skipped (the report says which and why). The Markdown
    links the PNGs; the HTML embeds them, so ``report.html`` alone can be mailed or attached.
    """
    return _write(_analyse(run_dir, window))


def _write(run: _Run) -> list[Path]:
    data = _report_data(run)
    plots = _plots(run, run.path / PLOT_DIR)
    blocks = _blocks(data, plots)
    md, page = run.path / "report.md", run.path / "report.html"
    md.write_text(_render_md(blocks, run.path))
    page.write_text(_render_html(blocks, f"chessrl report: {data['name']}"))
    return [md, page, *(p.path for p in plots if p.path is not None)]


# --- comparing runs ----------------------------------------------------------------------
# ``chessrl report RUN_A RUN_B ...``: the runs side by side, one column per run, and their
# curves overlaid, in one report.md / report.html written outside the runs.

COMPARE_KEYS = (  # (metrics key, plot title, y label), overlaid when some run logs them
    (RETURN_KEY, "Returns", RETURN_KEY), ("train/entropy", "Policy entropy", "nats"),
    ("train/clip_fraction", "Clip fraction", "fraction of plies"), ("train/kl_old_exact", "KL to the old policy", "nats"),
    ("train/kl_ref_exact", "KL to the reference policy", "nats"),
    (f"budget/{OBJECTIVE}/grad_share", "The objective's gradient share", "grad_share"),
)


def _labels(runs: list[_Run]) -> list[str]:
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
    """Dotted config keys whose values differ between the runs: key -> one value per run (None: not set)."""
    flat = [_flatten(c) for c in configs]
    keys = sorted({k for f in flat for k in f})
    return {k: [f.get(k) for f in flat] for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1}


def compare_report(run_dirs: list[str | Path], window: int | None = None) -> dict[str, Any]:
    """Each run's :func:`build_report` data and the config differences, as JSON-able data."""
    runs = [_analyse(d, window) for d in run_dirs]
    return _json_safe({"runs": [_report_data(r) for r in runs],
                       "config_differences": config_differences([r.config for r in runs])})


def _compare_plots(runs: list[_Run], labels: list[str], out: Path) -> list[Plot]:
    out.mkdir(parents=True, exist_ok=True)
    plots: list[Plot] = []
    w = min(r.monitor.window for r in runs)
    for key, title, ylabel in COMPARE_KEYS:
        series = [(i, *r.series(key)) for i, r in enumerate(runs) if r.series(key)[0]]
        if not series:
            continue
        if all(_constant(ys) for _, _, ys in series):
            plots.append(Plot(title, None, "; ".join(f"{labels[i]}: {key} is {_f(ys[0])} at every step"
                                                       for i, _, ys in series)))
            continue
        fig, ax = _figure(title, ylabel)
        for i, xs, ys in series:
            _curve(ax, xs, ys, labels[i], w, color=f"C{i}")
        ax.legend(fontsize="small")
        plots.append(Plot(title, _save(fig, out, f"compare_{_safe_name(key)}.png")))
    opponents = sorted({o for r in runs for o in r.monitor.eval_history()})
    for opp in opponents:
        title = f"Evaluation: {opp}" if "/" in opp else f"Evaluation vs {opp}"
        fig, ax = _figure(title, eval_key(opp))
        for i, r in enumerate(runs):
            evals = r.monitor.eval_history().get(opp)
            if not evals:
                continue
            steps = [e[0] for e in evals]
            bands = [wilson(s * g, g) for _, s, g in evals]
            ax.fill_between(steps, [b[0] for b in bands], [b[1] for b in bands], alpha=0.15, color=f"C{i}")
            ax.plot(steps, [e[1] for e in evals], "o-", color=f"C{i}", label=f"{labels[i]} (95% CI shaded)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize="small")
        plots.append(Plot(title, _save(fig, out, f"compare_eval_{_safe_name(opp)}.png")))
    return plots


def _compare_blocks(datas: list[dict[str, Any]], labels: list[str], diffs: dict[str, list[Any]],
                    plots: list[Plot]) -> list[Block]:
    b: list[Block] = [("h1", f"Comparison of {len(datas)} runs: {', '.join(labels)}")]
    b.append(("table", ["run", "directory", "steps", "health window", "learning", "findings (error / warning / info)",
                        "rules not evaluated yet"],
              [[lab, d["run_dir"], f"{d['last_step']}" + (f" of {d['planned_steps']}" if d["planned_steps"] else ""),
                d["window"], (d["learning"]["verdict"] or "no verdict yet")
                + (f" ({d['learning']['basis'].replace('_', ' ')})" if d["learning"]["basis"] else ""),
                " / ".join(str(sum(f["severity"] == s for f in d["findings"])) for s in ("error", "warning", "info")),
                len(d["not_evaluated"])] for lab, d in zip(labels, datas)]))

    b.append(("h2", "Config differences"))
    notes = [f"{lab}: {d['config_note']}." for lab, d in zip(labels, datas) if d["config_note"]]
    if diffs:
        b.append(("table", ["key", *labels], [[k, *("—" if v is None else json.dumps(v) if isinstance(v, (list, dict))
                                                   or v == "" else str(v) for v in vals)] for k, vals in diffs.items()]))
    else:
        b.append(("p", "The runs' configs are the same."))
    if notes:
        b.append(("ul", notes))

    b.append(("h2", "Findings"))
    for lab, d in zip(labels, datas):
        b.append(("h3", lab))
        b += _findings_blocks(d)

    b.append(("h2", "Loss budget"))
    terms = list(dict.fromkeys(t["term"] for d in datas for t in d["budget"]))
    if terms:
        b.append(("p", "Per term and run, means over each run's last window: grad share, cos with the objective, "
                       "value share, and the last coefficient."))
        cells = {(lab, t["term"]): (f"grad {_f(t['grad_share_window'], '.3f')}, cos {_f(t['cos_objective_window'], '+.3f')}, "
                                    f"value {_f(t['value_share_window'], '.3f')}, coef {_f(t['coef'])}"
                                    + (f"; {', '.join(t['flags'])}" if t["flags"] else ""))
                 for lab, d in zip(labels, datas) for t in d["budget"]}
        b.append(("table", ["term", *labels], [[t, *(cells.get((lab, t), "—") for lab in labels)] for t in terms]))
    else:
        b.append(("p", "No budget/ metrics were logged in any run."))

    b.append(("h2", "Plugins"))
    names = list(dict.fromkeys(p["name"] for d in datas for p in d["plugins"]))
    if names:
        cells = {(lab, p["name"]): (f"{p['kind']}, acted {p['acted']} of {p['steps']} steps" if p["kind"] != "term"
                                    else f"term, {p['steps']} steps")
                 + (f", at bound {_f(p['at_bound_frac'], '.0%')}" if p["at_bound_frac"] == p["at_bound_frac"] else "")
                 + (f"; {', '.join(p['flags'])}" if p["flags"] else "")
                 for lab, d in zip(labels, datas) for p in d["plugins"]}
        b.append(("table", ["plugin", *labels], [[n, *(cells.get((lab, n), "—") for lab in labels)] for n in names]))
    else:
        b.append(("p", "No plugins in any run."))

    b.append(("h2", "Training health"))
    keys = [k for k in HEALTH_KEYS if any(t["key"] == k for d in datas for t in d["training"])]
    if keys:
        b.append(("p", "Mean over each run's last window (first → last in brackets)."))
        cells = {(lab, t["key"]): f"{_f(t['window_mean'])} ({_f(t['first'])} → {_f(t['last'])})"
                 for lab, d in zip(labels, datas) for t in d["training"]}
        b.append(("table", ["metric", *labels], [[k, *(cells.get((lab, k), "—") for lab in labels)] for k in keys]))

    b.append(("h2", "Evaluation"))
    opps = list(dict.fromkeys(o for d in datas for o in d["evaluation"]))
    if opps:
        b.append(("p", "First and last evaluation of each run, with the last one's 95% Wilson interval."))
        def cell(ev: dict[str, Any]) -> str:
            first, last = ev["evals"][0], ev["evals"][-1]
            return (f"{_f(first['score'], '.3f')} (step {first['step']}) → {_f(last['score'], '.3f')} "
                    f"[{_f(last['lo'], '.3f')}, {_f(last['hi'], '.3f')}] (step {last['step']}, {last['games']})")
        b.append(("table", ["opponent", *labels], [[o, *(cell(d["evaluation"][o]) if o in d["evaluation"] else "—"
                                                        for d in datas)] for o in opps]))
    else:
        b.append(("p", "No evaluations were logged in any run."))

    b.append(("h2", "Curves, overlaid"))
    b += _plot_blocks(plots)
    return b


def write_comparison(run_dirs: list[str | Path], out: str | Path | None = None,
                     window: int | None = None) -> list[Path]:
    """Write a side-by-side ``report.md``, ``report.html`` and ``report/*.png`` of several runs.

    ``out`` defaults to ``compare-<run>-<run>...`` beside the first run. Returns the paths
    written, the two documents first. Each run is judged on its own health window unless
    ``window`` is given.
    """
    runs = [_analyse(d, window) for d in run_dirs]
    labels = _labels(runs)
    if out is None:
        out = runs[0].path.parent / ("compare-" + "-".join(r.path.name for r in runs))[:120]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    plots = _compare_plots(runs, labels, out / PLOT_DIR)
    blocks = _compare_blocks([_report_data(r) for r in runs], labels,
                             config_differences([r.config for r in runs]), plots)
    md, page = out / "report.md", out / "report.html"
    md.write_text(_render_md(blocks, out))
    page.write_text(_render_html(blocks, f"chessrl comparison: {', '.join(labels)}"))
    return [md, page, *(p.path for p in plots if p.path is not None)]


# --- CLI ---------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``chessrl report RUN_DIR [RUN_DIR ...] [--json] [--window N] [--out DIR]``; returns the exit code.

    With one run it writes the run's report into it, prints the paths and one line per
    finding and per rule that could not run yet. With several it writes a side-by-side
    comparison into ``--out``. With ``--json`` it writes nothing and prints the data as JSON.
    A missing or empty run directory raises :class:`UserError` (the CLI prints one line, exit 2).
    """
    parser = argparse.ArgumentParser(prog="chessrl report",
                                     description="Diagnose a run (findings, loss budget, plugins, plots), "
                                                 "or compare several side by side.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_command(args.run_dir, json_out=args.json, window=args.window, out=args.out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``chessrl report`` (shared with the CLI's sub-command)."""
    parser.add_argument("run_dir", nargs="+", metavar="RUN_DIR",
                        help="a run directory made by 'chessrl run' (holds metrics.jsonl and config.toml); "
                             "give several to compare them side by side")
    parser.add_argument("--json", action="store_true", help="print findings and summary as JSON; write no files")
    parser.add_argument("--window", type=int, default=None,
                        help="health window in steps (default: trainer.health_window of each run)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="with several runs: the directory the comparison is written to "
                             "(default: compare-<runs> beside the first run)")


def run_command(run_dirs: list[str], *, json_out: bool = False, window: int | None = None, out: str | None = None) -> int:
    """What ``chessrl report`` does with its parsed arguments; returns the exit code."""
    if window is not None and window < 2:
        raise UserError(f"--window {window}: the health window must be at least 2 steps")
    if out is not None and len(run_dirs) < 2:
        raise UserError("--out is for comparisons: give two or more run directories (one run's report is written into it)")
    if len(run_dirs) > 1:
        if json_out:
            print(json.dumps(compare_report(run_dirs, window), indent=2))
            return 0
        paths = write_comparison(run_dirs, out, window)
        print(f"wrote {paths[0]}, {paths[1]} and {len(paths) - 2} plot(s) comparing {len(run_dirs)} runs")
        return 0
    if json_out:
        print(json.dumps(build_report(run_dirs[0], window), indent=2))
        return 0
    analysed = _analyse(run_dirs[0], window)
    paths = _write(analysed)
    print(f"wrote {paths[0]}, {paths[1]} and {len(paths) - 2} plot(s) in {analysed.path / PLOT_DIR}")
    for finding in analysed.monitor.findings():
        print(finding.line())
    for pending in analysed.monitor.not_evaluated():
        print(f"health not evaluated yet [{pending.code}] {pending.subject + ': ' if pending.subject else ''}{pending.reason}")
    return 0


# --- formatting helpers ------------------------------------------------------------------

def _f(x: Any, spec: str = ".4g") -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and not math.isfinite(x):
        return "—" if math.isnan(x) else ("+inf" if x > 0 else "-inf")
    if isinstance(x, int) and not isinstance(x, bool) and spec == ".4g":
        return str(x)
    return format(x, spec)


def _elo(x: float | None) -> str:
    if x is None:
        return "—"
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    return f"{x:+.0f}"


def _elo_cells(elo: float | None, lo: float | None, hi: float | None) -> list[str]:
    """An Elo difference and its interval; a score of 0 (or 1) has no finite Elo and is said as
    such, with the bound the games do give."""
    if elo is not None and math.isinf(elo):
        return ["below the measurable range", f"< {_elo(hi)}"] if elo < 0 else \
            ["above the measurable range", f"> {_elo(lo)}"]
    return [_elo(elo), f"{_elo(lo)} to {_elo(hi)}"]


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _json_safe(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x

