"""``chessrl report RUN_A RUN_B ...``: the runs side by side, one column per run, and their
curves overlaid, in one report.md / report.html written outside the runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from chessrl import keys as K
from chessrl.errors import UserError
from chessrl.report.data import (
    HEALTH_KEYS,
    PLOT_DIR,
    Run,
    analyse,
    config_differences,
    fmt,
    report_data,
    run_labels,
    safe_name,
)
from chessrl.report.plots import Plot, constant, curve, figure, save
from chessrl.report.render import Block, findings_blocks, plot_blocks, render_html, render_md
from chessrl.stats import wilson

COMPARE_KEYS = (  # (metrics key, plot title, y label), overlaid when some run logs them
    (K.ROLLOUT_RETURN_MEAN, "Returns", K.ROLLOUT_RETURN_MEAN),
    (K.TRAIN_ENTROPY, "Policy entropy", "nats"),
    (K.TRAIN_CLIP_FRACTION, "Clip fraction", "fraction of plies"),
    (K.TRAIN_KL_OLD_EXACT, "KL to the old policy", "nats"),
    (K.TRAIN_KL_REF_EXACT, "KL to the reference policy", "nats"),
    (K.budget_key(K.OBJECTIVE, "grad_share"), "The objective's gradient share", "grad_share"),
)


def compare_plots(runs: list[Run], labels: list[str], out: Path) -> list[Plot]:
    out.mkdir(parents=True, exist_ok=True)
    plots: list[Plot] = []
    w = min(r.monitor.window for r in runs)
    for key, title, ylabel in COMPARE_KEYS:
        series = [(i, *r.series(key)) for i, r in enumerate(runs) if r.series(key)[0]]
        if not series:
            continue
        if all(constant(ys) for _, _, ys in series):
            plots.append(
                Plot(
                    title,
                    None,
                    "; ".join(
                        f"{labels[i]}: {key} is {fmt(ys[0])} at every step" for i, _, ys in series
                    ),
                )
            )
            continue
        fig, ax = figure(title, ylabel)
        for i, xs, ys in series:
            curve(ax, xs, ys, labels[i], w, color=f"C{i}")
        ax.legend(fontsize="small")
        plots.append(Plot(title, save(fig, out, f"compare_{safe_name(key)}.png")))
    opponents = sorted({o for r in runs for o in r.monitor.eval_history()})
    for opp in opponents:
        title = f"Evaluation: {opp}" if "/" in opp else f"Evaluation vs {opp}"
        fig, ax = figure(title, K.eval_series_key(opp))
        for i, r in enumerate(runs):
            evals = r.monitor.eval_history().get(opp)
            if not evals:
                continue
            steps = [e[0] for e in evals]
            bands = [wilson(s * g, g) for _, s, g in evals]
            ax.fill_between(
                steps, [b[0] for b in bands], [b[1] for b in bands], alpha=0.15, color=f"C{i}"
            )
            ax.plot(
                steps,
                [e[1] for e in evals],
                "o-",
                color=f"C{i}",
                label=f"{labels[i]} (95% CI shaded)",
            )
        ax.set_ylim(0, 1)
        ax.legend(fontsize="small")
        plots.append(Plot(title, save(fig, out, f"compare_eval_{safe_name(opp)}.png")))
    return plots


def compare_blocks(
    datas: list[dict[str, Any]], labels: list[str], diffs: dict[str, list[Any]], plots: list[Plot]
) -> list[Block]:
    b: list[Block] = [("h1", f"Comparison of {len(datas)} runs: {', '.join(labels)}")]
    b.append(
        (
            "table",
            [
                "run",
                "directory",
                "steps",
                "health window",
                "learning",
                "findings (error / warning / info)",
                "rules not evaluated yet",
            ],
            [
                [
                    lab,
                    d["run_dir"],
                    f"{d['last_step']}"
                    + (f" of {d['planned_steps']}" if d["planned_steps"] else ""),
                    d["window"],
                    (d["learning"]["verdict"] or "no verdict yet")
                    + (
                        f" ({d['learning']['basis'].replace('_', ' ')})"
                        if d["learning"]["basis"]
                        else ""
                    ),
                    " / ".join(
                        str(sum(f["severity"] == s for f in d["findings"]))
                        for s in ("error", "warning", "info")
                    ),
                    len(d["not_evaluated"]),
                ]
                for lab, d in zip(labels, datas)
            ],
        )
    )

    b.append(("h2", "Config differences"))
    notes = [f"{lab}: {d['config_note']}." for lab, d in zip(labels, datas) if d["config_note"]]
    if diffs:
        b.append(
            (
                "table",
                ["key", *labels],
                [
                    [
                        k,
                        *(
                            "—"
                            if v is None
                            else json.dumps(v)
                            if isinstance(v, (list, dict)) or v == ""
                            else str(v)
                            for v in vals
                        ),
                    ]
                    for k, vals in diffs.items()
                ],
            )
        )
    else:
        b.append(("p", "The runs' configs are the same."))
    if notes:
        b.append(("ul", notes))

    b.append(("h2", "Findings"))
    for lab, d in zip(labels, datas):
        b.append(("h3", lab))
        b += findings_blocks(d)

    b.append(("h2", "Loss budget"))
    terms = list(dict.fromkeys(t["term"] for d in datas for t in d["budget"]))
    if terms:
        b.append(
            (
                "p",
                "Per term and run, means over each run's last window: grad share, cos with the "
                "objective, value share, and the last coefficient.",
            )
        )
        cells = {
            (lab, t["term"]): (
                f"grad {fmt(t['grad_share_window'], '.3f')}, "
                f"cos {fmt(t['cos_objective_window'], '+.3f')}, "
                f"value {fmt(t['value_share_window'], '.3f')}, coef {fmt(t['coef'])}"
                + (f"; {', '.join(t['flags'])}" if t["flags"] else "")
            )
            for lab, d in zip(labels, datas)
            for t in d["budget"]
        }
        b.append(
            (
                "table",
                ["term", *labels],
                [[t, *(cells.get((lab, t), "—") for lab in labels)] for t in terms],
            )
        )
    else:
        b.append(("p", "No budget/ metrics were logged in any run."))

    b.append(("h2", "Plugins"))
    names = list(dict.fromkeys(p["name"] for d in datas for p in d["plugins"]))
    if names:
        cells = {
            (lab, p["name"]): (
                f"{p['kind']}, acted {p['acted']} of {p['steps']} steps"
                if p["kind"] != "term"
                else f"term, {p['steps']} steps"
            )
            + (
                f", at bound {fmt(p['at_bound_frac'], '.0%')}"
                if p["at_bound_frac"] == p["at_bound_frac"]
                else ""
            )
            + (f"; {', '.join(p['flags'])}" if p["flags"] else "")
            for lab, d in zip(labels, datas)
            for p in d["plugins"]
        }
        b.append(
            (
                "table",
                ["plugin", *labels],
                [[n, *(cells.get((lab, n), "—") for lab in labels)] for n in names],
            )
        )
    else:
        b.append(("p", "No plugins in any run."))

    b.append(("h2", "Training health"))
    keys = [k for k in HEALTH_KEYS if any(t["key"] == k for d in datas for t in d["training"])]
    if keys:
        b.append(("p", "Mean over each run's last window (first → last in brackets)."))
        cells = {
            (lab, t["key"]): f"{fmt(t['window_mean'])} ({fmt(t['first'])} → {fmt(t['last'])})"
            for lab, d in zip(labels, datas)
            for t in d["training"]
        }
        b.append(
            (
                "table",
                ["metric", *labels],
                [[k, *(cells.get((lab, k), "—") for lab in labels)] for k in keys],
            )
        )

    b.append(("h2", "Evaluation"))
    opps = list(dict.fromkeys(o for d in datas for o in d["evaluation"]))
    if opps:
        b.append(
            ("p", "First and last evaluation of each run, with the last one's 95% Wilson interval.")
        )

        def cell(ev: dict[str, Any]) -> str:
            first, last = ev["evals"][0], ev["evals"][-1]
            return (
                f"{fmt(first['score'], '.3f')} (step {first['step']}) → "
                f"{fmt(last['score'], '.3f')} [{fmt(last['lo'], '.3f')}, {fmt(last['hi'], '.3f')}] "
                f"(step {last['step']}, {last['games']})"
            )

        b.append(
            (
                "table",
                ["opponent", *labels],
                [
                    [o, *(cell(d["evaluation"][o]) if o in d["evaluation"] else "—" for d in datas)]
                    for o in opps
                ],
            )
        )
    else:
        b.append(("p", "No evaluations were logged in any run."))

    b.append(("h2", "Curves, overlaid"))
    b += plot_blocks(plots)
    return b


def write_comparison(
    run_dirs: Sequence[str | Path], out: str | Path | None = None, window: int | None = None
) -> list[Path]:
    """Write a side-by-side ``report.md``, ``report.html`` and ``report/*.png`` of several runs.

    ``out`` defaults to ``compare-<run>-<run>...`` beside the first run. Returns the paths
    written, the two documents first. Each run is judged on its own health window unless
    ``window`` is given.
    """
    runs = [analyse(d, window) for d in run_dirs]
    labels = run_labels(runs)
    if out is None:
        out = runs[0].path.parent / ("compare-" + "-".join(r.path.name for r in runs))[:120]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    plots = compare_plots(runs, labels, out / PLOT_DIR)
    blocks = compare_blocks(
        [report_data(r) for r in runs], labels, config_differences([r.config for r in runs]), plots
    )
    md, page = out / "report.md", out / "report.html"
    from chessrl.rundir import write_text  # imports torch: only when writing

    write_text(md, render_md(blocks, out))  # a temp file renamed: never half-written
    write_text(page, render_html(blocks, f"chessrl comparison: {', '.join(labels)}"))
    return [md, page, *(p.path for p in plots if p.path is not None)]
