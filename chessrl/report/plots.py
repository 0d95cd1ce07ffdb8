"""The report's plots: one PNG per question, drawn with matplotlib's object API (no pyplot).

A plot is drawn only when it shows something: a series that is constant (KL to a policy
synced every step, a clip fraction of 0, a fixed coefficient) is left out and said in one
line instead, and an evaluation plot needs two evaluations. Noisy series are drawn faint
with their rolling mean on top; step axes have integer ticks.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

from chessrl import keys as K
from chessrl.report.data import Run, fmt, safe_name
from chessrl.rules import CLIP_HIGH
from chessrl.stats import block_means, trend, wilson


@dataclass
class Plot:
    """One plot of a report: drawn (``path``) or skipped (``path`` None); ``note`` says what the
    plot leaves out, or why it was skipped."""

    title: str
    path: Path | None
    note: str = ""


_STYLE = {"min": ":", "max": "--", "target": "-.", "floor": "--"}
SMOOTH_MIN_POINTS = 10  # shorter series are drawn as they are


def figure(title: str, ylabel: str):
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


def save(fig, out: Path, name: str) -> Path:
    """Save ``fig`` as ``out/name`` with the run directory's atomic writer: a full disk leaves
    the previous plot (or none), never a half-written one."""
    from chessrl.rundir import write_text  # imports torch: only when writing

    path = out / name
    image = io.BytesIO()
    fig.savefig(image, format=path.suffix.lstrip(".") or "png")
    write_text(path, image.getvalue())
    return path


def constant(ys: list[float]) -> bool:
    return bool(ys) and max(ys) - min(ys) <= 1e-12 * max(1.0, abs(max(ys)), abs(min(ys)))


def smooth_window(n: int, window: int) -> int:
    """Points per rolling mean for a series of ``n`` points (0: draw it as it is)."""
    return min(window, max(2, n // 5)) if n >= SMOOTH_MIN_POINTS else 0


def rolling(ys: list[float], k: int) -> list[float]:
    """Trailing mean of ``k`` points (fewer at the start)."""
    out, total = [], 0.0
    for i, y in enumerate(ys):
        total += y - (ys[i - k] if i >= k else 0.0)
        out.append(total / min(i + 1, k))
    return out


def curve(
    ax,
    xs: list[int],
    ys: list[float],
    label: str,
    window: int,
    color: str | None = None,
    smooth: bool = True,
) -> str:
    """Draw a series: faint, with its rolling mean on top, when long enough to be noisy;
    returns its colour."""
    k = smooth_window(len(ys), window) if smooth else 0
    if k:
        (raw,) = ax.plot(xs, ys, alpha=0.25, linewidth=0.8, color=color)
        ax.plot(
            xs,
            rolling(ys, k),
            color=raw.get_color(),
            linewidth=1.6,
            label=f"{label} (mean of {k} steps)",
        )
        return raw.get_color()
    (line,) = ax.plot(
        xs,
        ys,
        marker="o" if len(xs) < SMOOTH_MIN_POINTS else None,
        markersize=3,
        label=label,
        color=color,
    )
    return line.get_color()


def hline(ax, y: float | None, label: str, color: str = "tab:red", style: str = "--") -> None:
    if y is not None and math.isfinite(y):
        ax.axhline(y, color=color, linestyle=style, linewidth=1, label=label)


def _declared_lines(ax, run: Run, keys: set[str], colors: dict[str, str]) -> list[str]:
    """Draw the lines plugins declared on ``keys`` (a bound, a target, a floor); returns their
    labels."""
    labels = []
    for d in run.monitor.declared():
        if d.key not in keys:
            continue
        label = f"{d.plugin}: {d.describe()}"
        color, style = colors.get(d.key, "tab:red"), _STYLE[d.kind]
        if d.constant:
            hline(ax, d.value, label, color=color, style=style)
        else:
            ax.plot(
                *run.series(d.metric),
                color=color,
                linestyle=style,
                linewidth=1,
                drawstyle="steps-post",
                label=label,
            )
        labels.append(label)
    return labels


def _declared_text(run: Run, key: str) -> str:
    lines = [f"{d.kind} {fmt(d.value)}" for d in run.monitor.declared() if d.key == key]
    return f" (declared {', '.join(lines)})" if lines else ""


def _constant_text(run: Run, keys: list[str]) -> str:
    return "; ".join(
        f"{k} is {fmt(run.series(k)[1][0])} at every step{_declared_text(run, k)}" for k in keys
    )


def _same_policy(run: Run) -> bool:
    """Whether the loss sees the policy that sampled: one PPO epoch on a policy synced every
    step."""
    t = run.config.get("trainer", {})
    return t.get("sync_every", 1) == 1 and t.get("ppo_steps", 1) == 1 and bool(run.config)


def _lines_plot(
    run: Run,
    out: Path,
    covered: set[str],
    title: str,
    ylabel: str,
    file: str,
    keys: list[str],
    labels: dict[str, str] | None = None,
    smooth: bool = True,
    why_constant: str = "",
    aliases: dict[str, str] | None = None,
) -> Plot | None:
    """A plot of ``keys`` with the lines declared on them; constant keys are named, not drawn.

    ``aliases`` maps a key left out because it repeats another (``kept``) to that key: its
    declared lines are drawn in the colour of ``kept``.
    """
    keys = [k for k in keys if run.series(k)[0]]
    if not keys:
        return None
    aliases = aliases or {}
    covered.update(keys, aliases)
    flat = [k for k in keys if constant(run.series(k)[1])]
    note = _constant_text(run, flat) + (f" ({why_constant})" if flat and why_constant else "")
    moving = [k for k in keys if k not in flat]
    if not moving:
        return Plot(title, None, note)
    fig, ax = figure(title, ylabel)
    colors = {
        k: curve(ax, *run.series(k), (labels or {}).get(k, k), run.monitor.window, smooth=smooth)
        for k in moving
    }
    colors.update({dup: colors[kept] for dup, kept in aliases.items() if kept in colors})
    drawn = _declared_lines(ax, run, set(colors), colors)
    values = [v for line in ax.get_lines() for v in line.get_ydata()]
    if ylabel == "coefficient" and values and min(values) > 0 and max(values) / min(values) >= 10:
        ax.set_yscale("log")  # only when the coefficients span a decade or more
    ax.legend(fontsize="small")
    parts = [
        f"lines declared by plugins: {', '.join(drawn)}" if drawn else "",
        f"not drawn, constant: {note}" if note else "",
    ]
    return Plot(title, save(fig, out, file), "; ".join(filter(None, parts)))


def _plot_grad_shares(run: Run, out: Path, covered: set[str]) -> Plot | None:
    terms = run.monitor.budget_terms()
    keys = {t: K.budget_key(t, "grad_share") for t in terms}
    steps = sorted({r[K.STEP] for r in run.rows if any(keys[t] in r for t in terms)})
    if not steps:
        return None
    title = "Gradient share per loss term"
    if all(constant(run.series(keys[t])[1]) for t in terms):
        return Plot(
            title,
            None,
            "the grad share of every term is constant: "
            + ", ".join(f"{t} {fmt(run.series(keys[t])[1][0], '.3f')}" for t in terms),
        )
    by_step = {r[K.STEP]: r for r in run.rows}
    ys = [[float(by_step[s].get(keys[t]) or 0.0) for s in steps] for t in terms]
    fig, ax = figure(title, "grad_share")
    ax.stackplot(steps, ys, labels=terms, alpha=0.85)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize="small")
    return Plot(title, save(fig, out, "grad_shares.png"))


def _plot_coefficients(run: Run, out: Path, covered: set[str]) -> Plot | None:
    # the coefficients plugins report (after their step's adjustment), and a term's budget coef
    # (the value its step trained with) only when its plugin reports none
    candidates = [K.plugin_key(name, K.COEF) for name in run.monitor.plugin_names()]
    candidates += [
        K.budget_key(t, "coef")
        for t in run.monitor.budget_terms()
        if t != K.OBJECTIVE and K.plugin_key(t, K.COEF) not in run.monitor.stats
    ]
    keys: list[str] = []
    labels: dict[str, str] = {}
    aliases: dict[
        str, str
    ] = {}  # a plugin's coef that repeats a term's (a controller's, a term's own)
    for k in candidates:
        label = (
            f"{k.split('/')[1]} coef" if k.startswith("plugin/") else f"{k.split('/')[1]} (budget)"
        )
        same = next((kept for kept in keys if run.series(kept) == run.series(k)), None)
        if same is None:
            keys.append(k)
            labels[k] = label
        else:
            aliases[k] = same
            labels[same] += f" = {label}"
    return _lines_plot(
        run,
        out,
        covered,
        "Coefficients",
        "coefficient",
        "coefficients.png",
        keys,
        labels,
        smooth=False,
        aliases=aliases,
    )


def _plot_entropy(run: Run, out: Path, covered: set[str]) -> Plot | None:
    return _lines_plot(
        run,
        out,
        covered,
        "Policy entropy",
        "nats",
        "entropy.png",
        [K.TRAIN_ENTROPY, K.TRAIN_ENTROPY_SAMPLE],
    )


def _plot_kl(run: Run, out: Path, covered: set[str]) -> Plot | None:
    keys = sorted(k for k in run.monitor.stats if k.startswith(K.TRAIN_KL_PREFIX))
    why = (
        "the loss sees the policy that sampled: trainer.sync_every = 1 and trainer.ppo_steps = 1"
        if _same_policy(run) and any(k.startswith(K.TRAIN_KL_OLD_PREFIX) for k in keys)
        else ""
    )
    return _lines_plot(run, out, covered, "KL divergence", "nats", "kl.png", keys, why_constant=why)


def _plot_clip(run: Run, out: Path, covered: set[str]) -> Plot | None:
    xs, ys = run.series(K.TRAIN_CLIP_FRACTION)
    if not xs:
        return None
    covered.add(K.TRAIN_CLIP_FRACTION)
    title = "Clip fraction"
    if constant(ys):
        why = (
            " (one PPO epoch on the policy that sampled: the ratio is 1, nothing to clip)"
            if _same_policy(run)
            else ""
        )
        return Plot(title, None, _constant_text(run, [K.TRAIN_CLIP_FRACTION]) + why)
    fig, ax = figure(title, "fraction of plies")
    curve(ax, xs, ys, K.TRAIN_CLIP_FRACTION, run.monitor.window)
    hline(ax, CLIP_HIGH, f"clip_high threshold {CLIP_HIGH}")
    ax.set_ylim(0, max(CLIP_HIGH * 1.5, max(ys) * 1.1))
    ax.legend(fontsize="small")
    return Plot(title, save(fig, out, "clip_fraction.png"))


def _plot_reward(run: Run, out: Path, covered: set[str]) -> Plot | None:
    xs, ys = run.series(K.ROLLOUT_RETURN_MEAN)
    if not xs:
        return None
    covered.add(K.ROLLOUT_RETURN_MEAN)
    title = "Returns"
    if constant(ys):
        return Plot(title, None, _constant_text(run, [K.ROLLOUT_RETURN_MEAN]))
    w = run.monitor.window
    fig, ax = figure(title, K.ROLLOUT_RETURN_MEAN)
    curve(ax, xs, ys, K.ROLLOUT_RETURN_MEAN, w)
    bx, by = block_means(xs, ys, w)
    if bx:
        ax.plot(bx, by, "o", markersize=4, color="black", label=f"window means ({w} steps)")
    t = trend(xs, ys, w)
    if math.isfinite(t.slope):
        ax.plot(
            [bx[0], bx[-1]],
            [t.intercept + t.slope * bx[0], t.intercept + t.slope * bx[-1]],
            "k--",
            label=f"trend: {t.verdict} ({t.slope:+.2g}/step)",
        )
    ax.legend(fontsize="small")
    return Plot(title, save(fig, out, "reward.png"))


def _plot_eval(run: Run, out: Path, opp: str, evals: list[tuple[int, float, int]]) -> Plot:
    title = f"Evaluation: {opp}" if "/" in opp else f"Evaluation vs {opp}"
    if len(evals) < 2:
        step, score, games = evals[0]
        return Plot(
            title,
            None,
            f"one evaluation ({K.eval_series_key(opp)} {score:.3f} at step {step}, {games} "
            f"{'items' if '/' in opp else 'games'}): see the table above",
        )
    fig, ax = figure(title, K.eval_series_key(opp))
    steps = [e[0] for e in evals]
    scores = [e[1] for e in evals]
    bands = [wilson(s * g, g) for _, s, g in evals]
    ax.fill_between(
        steps, [b[0] for b in bands], [b[1] for b in bands], alpha=0.25, label="Wilson 95% CI"
    )
    ax.plot(steps, scores, "o-", label="score")
    total = sum(e[2] for e in evals)
    pooled = sum(s * g for _, s, g in evals) / total
    hline(ax, pooled, f"pooled score {pooled:.3f} ({total} games)", color="gray")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="small")
    return Plot(title, save(fig, out, f"eval_{safe_name(opp)}.png"))


def _plot_declared(run: Run, out: Path, covered: set[str]) -> list[Plot]:
    """A plot for each metric a plugin declared lines on that no plot above shows (any plugin)."""
    plots: list[Plot] = []
    by_key: dict[str, str] = {}
    for d in run.monitor.declared():
        by_key.setdefault(d.key, d.plugin)
    for key, plugin in by_key.items():
        if key in covered:
            continue
        short = (
            key[len(K.plugin_key(plugin, "")) :]
            if key.startswith(K.plugin_key(plugin, ""))
            else key
        )
        if not run.series(key)[0]:
            plots.append(
                Plot(
                    f"{plugin}: {short}",
                    None,
                    f"{plugin} declares lines on {key}, which is not logged",
                )
            )
            continue
        p = _lines_plot(
            run, out, covered, f"{plugin}: {short}", short, f"declared_{safe_name(key)}.png", [key]
        )
        if p is not None:
            plots.append(p)
    return plots


def run_plots(run: Run, out: Path) -> list[Plot]:
    out.mkdir(exist_ok=True)
    covered: set[str] = set()
    plots = [
        p
        for p in (
            f(run, out, covered)
            for f in (
                _plot_grad_shares,
                _plot_coefficients,
                _plot_entropy,
                _plot_kl,
                _plot_clip,
                _plot_reward,
            )
        )
        if p is not None
    ]
    plots += [_plot_eval(run, out, opp, evals) for opp, evals in run.monitor.eval_history().items()]
    return plots + _plot_declared(run, out, covered)
