"""chessrl report: reading runs (complete, crashed, resumed), files written, --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chessrl.errors import UserError
from chessrl.report import build_report, load_metrics, main, read_metrics, write_report
from test_health import synthetic_rows

CONFIG = """[trainer]
steps = 120
health_window = 20

[plugins.entropy_bonus]
[plugins.kl_penalty]
[plugins.adaptive_kl]
target = 0.012

[plugins.entropy_floor]
floor = 1.5
"""


def make_run(tmp_path: Path, rows: list[dict], tail: str = "", config: str | None = CONFIG) -> Path:
    run = tmp_path / "run-1"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    if config is not None:
        (run / "config.toml").write_text(config)
    return run


@pytest.fixture(scope="module")
def sick_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("sick"), synthetic_rows(sick=True))


def test_complete_run_writes_every_file(sick_run):
    paths = write_report(sick_run)
    names = {p.relative_to(sick_run).as_posix() for p in paths}
    assert {"report.md", "report.html", "report/coefficients.png", "report/entropy.png", "report/kl.png",
            "report/clip_fraction.png", "report/reward.png", "report/eval_stockfish.png",
            "report/declared_plugin_adaptive_kl_kl.png"} <= names
    assert all(p.stat().st_size > 0 for p in paths)
    md = (sick_run / "report.md").read_text()
    for heading in ("## Findings", "## Loss budget", "## Plugins", "## Training health", "## Evaluation", "## Plots"):
        assert heading in md
    assert md.index("## Findings") < md.index("## Loss budget") < md.index("## Plugins")
    assert "entropy_floor never acted in 120 steps" in md and "![Returns](report/reward.png)" in md
    # the grad shares of the scripted run never move: named, not plotted
    assert "report/grad_shares.png" not in names
    assert "- Gradient share per loss term: the grad share of every term is constant: objective 0.030" in md
    # the lines the plugins declare, drawn where their metric is
    assert "Lines declared by plugins: adaptive_kl: coef max 0.1, adaptive_kl: coef min 0.001" in md
    assert "Lines declared by plugins: entropy_floor: train/entropy floor 1.5." in md
    assert "Lines declared by plugins: adaptive_kl: kl target 0.012." in md
    page = (sick_run / "report.html").read_text()
    assert "<table>" in page and "http" not in page


def test_html_is_one_file_with_the_plots_embedded(sick_run, tmp_path):
    import base64
    import shutil

    paths = write_report(sick_run)
    page = (sick_run / "report.html").read_text()
    embedded = page.split('<img src="data:image/png;base64,')[1:]
    assert len(embedded) == len(paths) - 2 and 'src="report/' not in page
    assert base64.b64decode(embedded[0].split('"')[0]) == paths[2].read_bytes()
    alone = tmp_path / "mailed.html"   # nothing else travels with it
    shutil.copy(sick_run / "report.html", alone)
    assert alone.read_text() == page


def test_build_report_numbers(sick_run):
    data = build_report(sick_run)
    assert data["complete"] and data["last_step"] == 120 and data["ignored_lines"] == 0
    codes = {f["code"] for f in data["findings"]}
    assert {"dead", "saturated", "dominant", "opposes_objective", "clip_high", "eval_noise"} <= codes
    budget = {t["term"]: t for t in data["budget"]}
    assert budget["entropy_bonus"]["grad_share_window"] == pytest.approx(0.95)
    assert budget["objective"]["cos_objective_run"] == pytest.approx(1.0)
    plugins = {p["name"]: p for p in data["plugins"]}
    assert plugins["entropy_floor"]["acted"] == 0 and plugins["entropy_floor"]["kind"] == "monitor"
    assert plugins["adaptive_kl"]["at_bound_frac_window"] == 1.0 and "saturated" in plugins["adaptive_kl"]["flags"]
    ev = data["evaluation"]["stockfish"]["evals"]
    assert ev[5]["score"] == 0.1 and ev[5]["lo"] == pytest.approx(0.0478, abs=1e-4)


def test_crashed_run_ignores_partial_line(tmp_path):
    rows = synthetic_rows(n=50, sick=True, evals=False)
    run = make_run(tmp_path, rows, tail='{"step": 51, "train/clip_fr', config=None)
    loaded, bad = read_metrics(run)
    assert len(loaded) == 50 and bad == [51]
    paths = write_report(run)
    names = {p.name for p in paths}
    assert "eval_stockfish.png" not in names and "reward.png" in names     # no eval data: no eval plot
    md = (run / "report.md").read_text()
    assert "partial last line" in md and "config.toml is missing" in md and "No evaluations" in md


def test_sparse_rows_skip_plots(tmp_path):
    run = make_run(tmp_path, [{"step": s, "train/clip_fraction": 0.1 * s} for s in range(1, 6)], config=None)
    paths = write_report(run)
    assert [p.name for p in paths[2:]] == ["clip_fraction.png"]


def test_resumed_and_split_rows(tmp_path):
    rows = [{"step": 1, "a": 1}, {"step": 2, "a": 2}, {"step": 3, "a": 3},
            {"step": 2, "a": 20}, {"step": 2, "eval/x/score": 0.5}, {"step": 3, "a": 30}]
    run = make_run(tmp_path, rows, config=None)
    assert load_metrics(run) == [{"step": 1, "a": 1}, {"step": 2, "a": 20, "eval/x/score": 0.5}, {"step": 3, "a": 30}]


def test_json_output_parses(sick_run, capsys):
    assert main([str(sick_run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"findings", "budget", "plugins", "evaluation"} <= set(data)
    assert any(f["code"] == "dead" and f["subject"] == "entropy_floor" for f in data["findings"])


def test_main_prints_findings(sick_run, capsys):
    assert main([str(sick_run)]) == 0
    out = capsys.readouterr().out
    assert "report.md" in out and "[dead]" in out


@pytest.mark.parametrize("setup", ["missing", "no_metrics", "empty"])
def test_bad_run_dir_is_a_user_error(tmp_path, setup):
    run = tmp_path / "r"
    if setup != "missing":
        run.mkdir()
    if setup == "empty":
        (run / "metrics.jsonl").write_text('{"step": 1, "trunc')
    with pytest.raises(UserError) as err:
        main([str(run)])
    assert "\n" not in str(err.value)


def test_learning_line_rests_on_evaluations_when_there_are_any(tmp_path):
    rows = [{"step": s, "rollout/return_mean": 0.0} for s in range(0, 101)]
    rows[0] = {"step": 0, "eval/solver/score": 0.0, "eval/solver/games": 200}   # the initial policy
    rows[-1].update({"eval/solver/score": 0.12, "eval/solver/games": 200})
    run = make_run(tmp_path, rows, config="[trainer]\nsteps = 100\nhealth_window = 20\n")
    data = build_report(run)
    assert data["learning"]["verdict"] == "improving" and data["learning"]["basis"] == "evaluation"
    assert data["reward_trend"]["verdict"] == "flat"
    write_report(run)
    md = (run / "report.md").read_text()
    assert "steps 1–100 of 100 planned" in md and "step 0 is the initial policy's evaluation" in md
    assert "Learning: **improving**, judged on evaluations" in md
    assert md.index("Learning:") < md.index("## Findings")
