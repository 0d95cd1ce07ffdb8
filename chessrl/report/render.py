"""The report rendered: a list of blocks, written out twice, to Markdown and to HTML.

:func:`report_blocks` lays out a run's report data (and its plots) as blocks; both renderers
take the same blocks, so ``report.md`` and ``report.html`` say the same. The HTML is one
self-contained page with the plots embedded as data URIs.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from chessrl import keys as K
from chessrl.report.data import PLOT_DIR, Run, analyse, fmt, report_data
from chessrl.report.plots import Plot, run_plots

# ("h1"|"h2"|"h3"|"p", text) | ("ul", [text]) | ("table", headers, rows) | ("img", path, alt)
Block = tuple


def report_blocks(data: dict[str, Any], plots: list[Plot]) -> list[Block]:
    w = data["window"]
    b: list[Block] = [("h1", f"Run report: {data['name']}")]
    first = data["first_step"]
    status = (
        f"steps {1 if first == 0 else first}–{data['last_step']}"
        + (f" of {data['planned_steps']} planned" if data["planned_steps"] else "")
        + (
            ""
            if data["complete"] or not data["planned_steps"]
            else " (stopped early or still running)"
        )
        + f"; health window {w} steps"
        + ("; step 0 is the initial policy's evaluation." if first == 0 else ".")
    )
    b.append(("p", status))
    if data["ignored_lines"]:
        b.append(("p", data["ignored_note"][0].upper() + data["ignored_note"][1:] + "."))
    if data["config_note"]:
        b.append(("p", data["config_note"] + "."))
    b.append(("p", _learning_line(data)))

    b.append(("h2", "Findings"))
    b += findings_blocks(data)

    b.append(("h2", "Loss budget"))
    if data["budget"]:
        b.append(
            (
                "p",
                f"Mean over the last {w} steps (window) and over the run. A term's share of the "
                "loss value is not its share of the gradient; grad share and cos decide "
                "(docs/diagnostics.md).",
            )
        )
        b.append(
            (
                "table",
                [
                    "term",
                    "coef",
                    "value share (window / run)",
                    "grad share (window / run)",
                    "cos objective (window / run)",
                    "flags",
                ],
                [
                    [
                        t["term"],
                        fmt(t["coef"]),
                        _pair(t["value_share_window"], t["value_share_run"], ".3f"),
                        _pair(t["grad_share_window"], t["grad_share_run"], ".3f"),
                        _pair(t["cos_objective_window"], t["cos_objective_run"], ".3f"),
                        ", ".join(t["flags"]),
                    ]
                    for t in data["budget"]
                ],
            )
        )
    else:
        b.append(("p", "No budget/ metrics were logged (trainer.budget_every = 0?)."))

    b.append(("h2", "Plugins"))
    if data["plugins"]:
        b.append(
            (
                "table",
                [
                    "plugin",
                    "kind",
                    "steps",
                    "acted",
                    "steps since acted",
                    "at bound (run / window)",
                    "last metrics",
                    "declared lines",
                    "flags",
                ],
                [
                    [
                        p["name"] + ("" if p["enabled"] is not False else " (not in config)"),
                        p["kind"],
                        p["steps"],
                        p["acted"] if p["kind"] != "term" else "—",
                        "never"
                        if p["steps_since_acted"] is None and p["kind"] != "term"
                        else fmt(p["steps_since_acted"]),
                        _pair(p["at_bound_frac"], p["at_bound_frac_window"], ".0%"),
                        ", ".join(f"{k}={fmt(v)}" for k, v in sorted(p["metrics"].items())),
                        ", ".join(d["text"] for d in p["declared"]),
                        ", ".join(p["flags"]),
                    ]
                    for p in data["plugins"]
                ],
            )
        )
    else:
        b.append(("p", "No plugins enabled."))

    b.append(("h2", "Training health"))
    if data["training"]:
        b.append(
            (
                "table",
                ["metric", "first", f"last {w} steps", "run mean", "min", "max", "last", "flags"],
                [
                    [
                        t["key"],
                        fmt(t["first"]),
                        fmt(t["window_mean"]),
                        fmt(t["run_mean"]),
                        fmt(t["min"]),
                        fmt(t["max"]),
                        fmt(t["last"]),
                        ", ".join(t["flags"]),
                    ]
                    for t in data["training"]
                ],
            )
        )
    rt = data["reward_trend"]
    if rt and rt["windows"] and rt["windows"] >= 3:
        b.append(
            (
                "p",
                f"Reward trend: {K.ROLLOUT_RETURN_MEAN} is **{rt['verdict']}**, slope "
                f"{fmt(rt['slope'], '+.3g')}/step (95% CI {fmt(rt['lo'], '+.3g')} to "
                f"{fmt(rt['hi'], '+.3g')}) over {rt['windows']} windows of {w} steps.",
            )
        )
    else:
        b.append(
            (
                "p",
                f"Reward trend: fewer than 3 windows of {w} steps of {K.ROLLOUT_RETURN_MEAN}; "
                "no verdict.",
            )
        )

    b.append(("h2", "Evaluation"))
    if data["evaluation"]:
        for opp, ev in data["evaluation"].items():
            p = ev["pooled"]
            b.append(
                (
                    "p",
                    f"**{opp}**: pooled score {fmt(p['score'], '.3f')} over {p['games']} games "
                    f"(95% CI {fmt(p['lo'], '.3f')}–{fmt(p['hi'], '.3f')})."
                    + (f" Flags: {', '.join(ev['flags'])}." if ev["flags"] else ""),
                )
            )
            b.append(
                (
                    "table",
                    ["step", "games", "score", "95% CI", "Elo diff", "Elo 95% CI"],
                    [
                        [
                            e["step"],
                            e["games"],
                            fmt(e["score"], ".3f"),
                            f"{fmt(e['lo'], '.3f')}–{fmt(e['hi'], '.3f')}",
                            *elo_cells(e["elo"], e["elo_lo"], e["elo_hi"]),
                        ]
                        for e in ev["evals"]
                    ],
                )
            )
    else:
        b.append(("p", "No evaluations were logged (trainer.eval_every = 0?)."))

    b.append(("h2", "Plots"))
    b += plot_blocks(plots)
    return b


def findings_blocks(data: dict[str, Any]) -> list[Block]:
    """Findings, the findings that no longer hold, and the rules that could not run yet."""
    b: list[Block] = []
    pending = data["not_evaluated"]
    if data["findings"]:
        b.append(
            (
                "ul",
                [f"**{f['severity']}** `{f['code']}` — {f['message']}" for f in data["findings"]],
            )
        )
    elif pending:
        b.append(
            (
                "p",
                f"No findings from the rules that ran; {len(pending)} rule check(s) could not "
                "run yet (below).",
            )
        )
    else:
        b.append(("p", "No findings: every health rule passed."))
    if data["earlier_findings"]:
        b.append(("p", "Raised during the run, no longer holding at its end:"))
        b.append(
            (
                "ul",
                [
                    f"step {f['step']}: **{f['severity']}** `{f['code']}` — {f['message']}"
                    for f in data["earlier_findings"]
                ],
            )
        )
    if pending:
        b.append(
            (
                "p",
                "Not evaluated yet (the run is too short for them; `--window N` judges on a "
                "shorter window):",
            )
        )
        b.append(("ul", [n["text"] for n in pending]))
    return b


def plot_blocks(plots: list[Plot]) -> list[Block]:
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
        return (
            "Learning: **no verdict yet** (fewer than two evaluations and fewer than 3 windows of "
            f"{K.ROLLOUT_RETURN_MEAN})."
        )
    if ln["basis"] == "evaluation":
        return (
            f"Learning: **{ln['verdict']}**, judged on evaluations against fixed opponents "
            "(first vs last, "
            "95% CI of the difference): " + "; ".join(t["text"] for t in ln["eval_trends"]) + "."
        )
    return (
        f"Learning: **{ln['verdict']}**, judged on the reward trend (no evaluations): "
        f"{K.ROLLOUT_RETURN_MEAN} slope {fmt(rt['slope'], '+.3g')}/step (95% CI "
        f"{fmt(rt['lo'], '+.3g')} to {fmt(rt['hi'], '+.3g')})."
    )


def render_md(blocks: list[Block], base: Path) -> str:
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
            lines += [
                "| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows
            ]
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


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "color:#222}\n"
    "table{border-collapse:collapse;margin:1em 0;font-size:.9em}"
    "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}\n"
    "th{background:#f3f3f3}code{background:#f3f3f3;padding:0 .2em}"
    "img{max-width:100%;display:block;margin:1em 0}"
)


def render_html(blocks: list[Block], title: str) -> str:
    """One self-contained page: the plots are embedded as data URIs, so it can be mailed alone."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
    ]
    for blk in blocks:
        kind = blk[0]
        if kind in ("h1", "h2", "h3", "p"):
            out.append(f"<{kind}>{_inline_html(blk[1])}</{kind}>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in blk[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in blk[1])
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                for row in blk[2]
            )
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
    return write(analyse(run_dir, window))


def write(run: Run) -> list[Path]:
    data = report_data(run)
    plots = run_plots(run, run.path / PLOT_DIR)
    blocks = report_blocks(data, plots)
    md, page = run.path / "report.md", run.path / "report.html"
    from chessrl.rundir import write_text  # imports torch: only when writing

    write_text(md, render_md(blocks, run.path))  # a temp file renamed: never half-written
    write_text(page, render_html(blocks, f"chessrl report: {data['name']}"))
    return [md, page, *(p.path for p in plots if p.path is not None)]


def _pair(window: Any, run: Any, spec: str) -> str:
    """A "window / run" cell."""
    return f"{fmt(window, spec)} / {fmt(run, spec)}"


def _elo(x: float | None) -> str:
    if x is None:
        return "—"
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    return f"{x:+.0f}"


def elo_cells(elo: float | None, lo: float | None, hi: float | None) -> list[str]:
    """An Elo difference and its interval; a score of 0 (or 1) has no finite Elo and is said as
    such, with the bound the games do give."""
    if elo is not None and math.isinf(elo):
        return (
            ["below the measurable range", f"< {_elo(hi)}"]
            if elo < 0
            else ["above the measurable range", f"> {_elo(lo)}"]
        )
    return [_elo(elo), f"{_elo(lo)} to {_elo(hi)}"]
