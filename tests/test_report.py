"""chessrl report: reading runs (complete, crashed, resumed), files written, --json."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from test_health import synthetic_rows

from chessrl import hookimpl
from chessrl.errors import UserError
from chessrl.regularisers import NoOptions, PluginReport, Regulariser
from chessrl.report import build_report, load_metrics, main, read_run_metrics, write_report

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
    assert {
        "report.md",
        "report.html",
        "report/coefficients.png",
        "report/entropy.png",
        "report/kl.png",
        "report/clip_fraction.png",
        "report/reward.png",
        "report/eval_stockfish.png",
        "report/declared_plugin_adaptive_kl_kl.png",
    } <= names
    assert all(p.stat().st_size > 0 for p in paths)
    md = (sick_run / "report.md").read_text()
    for heading in (
        "## Findings",
        "## Loss budget",
        "## Plugins",
        "## Training health",
        "## Evaluation",
        "## Plots",
    ):
        assert heading in md
    assert md.index("## Findings") < md.index("## Loss budget") < md.index("## Plugins")
    assert "entropy_floor never acted in 120 steps" in md and "![Returns](report/reward.png)" in md
    # the grad shares of the scripted run never move: named, not plotted
    assert "report/grad_shares.png" not in names
    assert (
        "- Gradient share per loss term: the grad share of every term is constant: objective 0.030"
        in md
    )
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
    alone = tmp_path / "mailed.html"  # nothing else travels with it
    shutil.copy(sick_run / "report.html", alone)
    assert alone.read_text() == page


def test_build_report_numbers(sick_run):
    data = build_report(sick_run)
    assert data["complete"] and data["last_step"] == 120 and data["ignored_lines"] == 0
    codes = {f["code"] for f in data["findings"]}
    assert {
        "dead",
        "saturated",
        "dominant",
        "opposes_objective",
        "clip_high",
        "eval_noise",
    } <= codes
    budget = {t["term"]: t for t in data["budget"]}
    assert budget["entropy_bonus"]["grad_share_window"] == pytest.approx(0.95)
    assert budget["objective"]["cos_objective_run"] == pytest.approx(1.0)
    plugins = {p["name"]: p for p in data["plugins"]}
    assert plugins["entropy_floor"]["acted"] == 0 and plugins["entropy_floor"]["kind"] == "monitor"
    assert (
        plugins["adaptive_kl"]["at_bound_frac_window"] == 1.0
        and "saturated" in plugins["adaptive_kl"]["flags"]
    )
    ev = data["evaluation"]["stockfish"]["evals"]
    assert ev[5]["score"] == 0.1 and ev[5]["lo"] == pytest.approx(0.0478, abs=1e-4)


def test_crashed_run_ignores_partial_line(tmp_path):
    rows = synthetic_rows(n=50, sick=True, evals=False)
    run = make_run(tmp_path, rows, tail='{"step": 51, "train/clip_fr', config=None)
    loaded, bad = read_run_metrics(run)
    assert len(loaded) == 50 and bad == [51]
    paths = write_report(run)
    names = {p.name for p in paths}
    assert "eval_stockfish.png" not in names and "reward.png" in names  # no eval data: no eval plot
    md = (run / "report.md").read_text()
    assert "partial last line" in md and "config.toml is missing" in md and "No evaluations" in md


def test_sparse_rows_skip_plots(tmp_path):
    run = make_run(
        tmp_path, [{"step": s, "train/clip_fraction": 0.1 * s} for s in range(1, 6)], config=None
    )
    paths = write_report(run)
    assert [p.name for p in paths[2:]] == ["clip_fraction.png"]


def test_resumed_and_split_rows(tmp_path):
    rows = [
        {"step": 1, "a": 1},
        {"step": 2, "a": 2},
        {"step": 3, "a": 3},
        {"step": 2, "a": 20},
        {"step": 2, "eval/x/score": 0.5},
        {"step": 3, "a": 30},
    ]
    run = make_run(tmp_path, rows, config=None)
    assert load_metrics(run) == [
        {"step": 1, "a": 1},
        {"step": 2, "a": 20, "eval/x/score": 0.5},
        {"step": 3, "a": 30},
    ]


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


def test_a_report_that_cannot_be_written_is_one_line_and_leaves_nothing_half_written(tmp_path):
    run = make_run(tmp_path, synthetic_rows(n=30, sick=True))
    (run / "report").write_text("a file where the plots go")
    with pytest.raises(UserError, match="cannot write the report") as err:
        main([str(run)])
    assert "\n" not in str(err.value)
    assert not (run / "report.md").exists() and not list(run.glob(".*.tmp"))
    (run / "report").unlink()
    assert main([str(run)]) == 0 and (run / "report.md").exists()
    assert not list((run / "report").glob(".*.tmp"))


def test_learning_line_rests_on_evaluations_when_there_are_any(tmp_path):
    rows = [{"step": s, "rollout/return_mean": 0.0} for s in range(0, 101)]
    rows[0] = {"step": 0, "eval/solver/score": 0.0, "eval/solver/games": 200}  # the initial policy
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


# --- rules that could not run ------------------------------------------------------------


def test_a_run_shorter_than_its_window_says_which_rules_did_not_run(tmp_path, capsys):
    run = make_run(
        tmp_path,
        synthetic_rows(n=40, sick=True),
        config=CONFIG.replace("health_window = 20", "health_window = 50"),
    )
    write_report(run)
    md = (run / "report.md").read_text()
    assert "every health rule passed" not in md and "**warning**" not in md
    assert "Not evaluated yet" in md
    assert "- `dead` (entropy_floor): needs 50 steps, run has 40" in md
    assert "- `saturated` (adaptive_kl): needs 50 steps, run has 40" in md
    assert main([str(run)]) == 0
    assert (
        "health not evaluated yet [dead] entropy_floor: needs 50 steps, run has 40"
        in capsys.readouterr().out
    )
    # judged on a window the run fills, the same rows have findings and nothing window-bound waits
    data = build_report(run, window=20)
    assert {"dead", "saturated"} <= {f["code"] for f in data["findings"]}
    assert not {n["code"] for n in data["not_evaluated"]} & {"dead", "saturated", "clip_high"}


# --- plots that carry nothing ------------------------------------------------------------


def test_constant_series_are_named_not_plotted(tmp_path):
    rows = []
    for s in range(1, 31):
        rows.append(
            {
                "step": s,
                "train/kl_old_exact": 0.0,
                "train/kl_old_k1": 0.0,
                "train/clip_fraction": 0.0,
                "train/entropy": 2.0 - 0.01 * s,
                "budget/objective/coef": 1.0,
                "budget/objective/grad_share": 0.6,
                "budget/entropy_bonus/coef": 0.01,
                "budget/entropy_bonus/grad_share": 0.4,
                "rollout/return_mean": 0.01 * s,
            }
        )
    rows[0].update({"eval/solver/score": 0.25, "eval/solver/games": 8})
    run = make_run(tmp_path, rows, config="[trainer]\nsteps = 30\nsync_every = 1\nppo_steps = 1\n")
    names = [p.name for p in write_report(run)[2:]]
    assert names == ["entropy.png", "reward.png"]
    md = (run / "report.md").read_text()
    assert (
        "- KL divergence: train/kl_old_exact is 0 at every step; train/kl_old_k1 is 0 at every "
        "step (the loss sees the policy that sampled: trainer.sync_every = 1 and "
        "trainer.ppo_steps = 1)."
    ) in md
    assert "- Clip fraction: train/clip_fraction is 0 at every step (one PPO epoch" in md
    assert "- Coefficients: budget/entropy_bonus/coef is 0.01 at every step." in md
    assert "No findings from the rules that ran" in md
    assert (
        "- Evaluation vs solver: one evaluation (eval/solver/score 0.250 at step 1, 8 games)" in md
    )


def test_step_ticks_are_integers_and_noisy_series_are_smoothed():
    from chessrl.report import plots

    fig, ax = plots.figure("t", "y")
    ax.plot([1, 2, 3, 4], [0.0, 1.0, 0.0, 1.0])
    fig.canvas.draw()
    assert [t for t in ax.get_xticks() if t != int(t)] == []
    assert plots.smooth_window(40, 50) == 8 and plots.smooth_window(9, 50) == 0
    assert plots.rolling([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    fig, ax = plots.figure("t", "y")
    plots.curve(ax, list(range(40)), [float(i % 2) for i in range(40)], "noisy", 50)
    raw, smooth = ax.get_lines()
    assert raw.get_alpha() == 0.25 and smooth.get_label() == "noisy (mean of 8 steps)"
    assert raw.get_color() == smooth.get_color()


# --- lines a plugin declares ---------------------------------------------------------------


class EntropyBand(Regulariser):
    """A third-party-style monitor: reports a margin and declares its bounds, and a target on
    a metric of the core. Nothing in chessrl knows its name or its options."""

    Config = NoOptions

    @hookimpl
    def chessrl_step_end(self, metrics):
        entropy = float(metrics.get("train/entropy", float("nan")))
        return PluginReport(
            metrics={"margin": entropy - 0.5},
            acted=False,
            bounds={"margin": (0.0, 2.5)},
            targets={"train/entropy": 1.25},
        )


class EntropyBandModule:
    @staticmethod
    @hookimpl
    def chessrl_register_regularisers(register):
        register("entropy_band", EntropyBand)


def test_a_third_party_plugin_declares_lines_that_the_report_draws(
    tiny_config, tmp_path, register_plugin
):
    from chessrl.config import load_config
    from chessrl.trainer import train

    register_plugin(EntropyBandModule, "entropy_band_module")
    cfg = load_config(tiny_config, ["plugins.entropy_band={}", "trainer.steps=3"])
    run_dir = train(cfg, tmp_path / "run", progress=False, echo=lambda s: None)
    rows = load_metrics(run_dir)
    assert (
        rows[-1]["plugin/entropy_band/margin@min"] == 0.0
        and rows[-1]["plugin/entropy_band/margin@max"] == 2.5
    )
    assert rows[-1]["plugin/entropy_band/train/entropy@target"] == 1.25
    names = [p.name for p in write_report(run_dir)[2:]]
    assert "declared_plugin_entropy_band_margin.png" in names and "entropy.png" in names
    md = (run_dir / "report.md").read_text()
    assert "![entropy_band: margin](report/declared_plugin_entropy_band_margin.png)" in md
    assert (
        "Lines declared by plugins: entropy_band: margin min 0, entropy_band: margin max 2.5." in md
    )
    assert "Lines declared by plugins: entropy_band: train/entropy target 1.25." in md
    [plugin] = [p for p in build_report(run_dir)["plugins"] if p["name"] == "entropy_band"]
    assert [d["text"] for d in plugin["declared"]] == [
        "margin min 0",
        "margin max 2.5",
        "train/entropy target 1.25",
    ]
    assert "margin@max" not in plugin["metrics"]


def test_a_malformed_declaration_names_the_plugin():
    with pytest.raises(
        TypeError, match="plugin p: bounds\\['coef'\\] must be a \\(min, max\\) pair"
    ):
        PluginReport(bounds={"coef": 0.5}).declared_metrics("p")
    assert PluginReport(
        bounds={"coef": (None, float("inf"))}, floors={"train/entropy": 1}
    ).declared_metrics("p") == {"plugin/p/train/entropy@floor": 1.0}


# --- comparing runs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    return (
        make_run(a, synthetic_rows(sick=True)),
        make_run(
            b, synthetic_rows(sick=False), config=CONFIG.replace("floor = 1.5", "floor = 2.0")
        ),
    )


def test_compare_runs_side_by_side(two_runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main([str(two_runs[0]), str(two_runs[1]), "--out", str(out)]) == 0
    assert "comparing 2 runs" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert "| plugins.entropy_floor.floor | 1.5 | 2.0 |" in md  # config differences
    assert md.count("### ") == 2  # findings per run
    assert "- **warning** `dead` — entropy_floor never acted in 120 steps" in md  # findings per run
    budget = md[md.index("## Loss budget") : md.index("## Plugins")]
    assert (
        "| entropy_bonus | grad 0.950, cos +0.050" in budget and "grad 0.200, cos +0.100" in budget
    )
    assert "![Returns](report/compare_rollout_return_mean.png)" in md  # curves overlaid
    assert (out / "report" / "compare_eval_stockfish.png").stat().st_size > 0
    page = (out / "report.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == len(
        list((out / "report").glob("*.png"))
    )


def test_compare_json_and_usage_errors(two_runs, capsys):
    assert main([str(two_runs[0]), str(two_runs[1]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["runs"]) == 2 and data["config_differences"] == {
        "plugins.entropy_floor.floor": [1.5, 2.0]
    }
    with pytest.raises(UserError, match="--out is for comparisons"):
        main([str(two_runs[0]), "--out", "x"])


def test_cli_compares_runs(two_runs, tmp_path, cli):
    r = cli("report", str(two_runs[0]), str(two_runs[1]), "--out", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "c" / "report.html").exists()
    r = cli("report", str(two_runs[0]), "--out", str(tmp_path / "c"))
    assert (
        r.returncode == 2 and "Traceback" not in r.stderr and "--out is for comparisons" in r.stderr
    )


# --- a real browser ------------------------------------------------------------------------

BROWSER = next(
    (
        shutil.which(b)
        for b in ("chromium", "chromium-browser", "google-chrome", "chrome")
        if shutil.which(b)
    ),
    None,
)


@pytest.mark.skipif(
    BROWSER is None, reason="no Chromium on this machine (Debian: apt-get install chromium)"
)
def test_report_html_shows_its_plots_in_a_browser(sick_run, tmp_path):
    import numpy as np
    from PIL import Image

    paths = write_report(sick_run)
    page = (
        tmp_path / "mailed" / "report.html"
    )  # alone, away from the run's PNGs: what a recipient opens
    page.parent.mkdir()
    shutil.copy(sick_run / "report.html", page)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1100,5200",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert image.shape == (5200, 1100, 3)

    # matplotlib's first line colour appears only inside the plots, never in the text or tables:
    # in thousands of pixels, spread over the height of several plots (each is 360 pixels tall)
    blue = np.abs(image - np.array((31, 119, 180))).max(axis=-1) <= 40
    rows = np.flatnonzero(blue.any(axis=1))
    assert blue.sum() > 5000 and rows.max() - rows.min() > 4 * 360
    # and the plot regions are pictures, not a broken-image icon: many distinct colours
    packed = (image[..., 0] << 16) | (image[..., 1] << 8) | image[..., 2]
    assert len(np.unique(packed)) > 500
    assert len(paths) - 2 >= 6
