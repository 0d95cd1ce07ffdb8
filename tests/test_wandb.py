"""wandb as its users expect (chessrl/metrics.py): its environment variables win, --resume
continues the same run, findings, the report and the checkpoint reach it. wandb runs offline
only (never the network); the tests read wandb's own run files back."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import wandb
from wandb.proto import wandb_internal_pb2 as pb

from chessrl.config import load_config
from chessrl.metrics import WANDB_ID_FILE, _settings, wandb_mode
from chessrl.trainer import train

WANDB_ENV = (
    "WANDB_MODE",
    "WANDB_DISABLED",
    "WANDB_API_KEY",
    "WANDB_PROJECT",
    "WANDB_ENTITY",
    "WANDB_RUN_GROUP",
    "WANDB_TAGS",
    "WANDB_RUN_ID",
)


@pytest.fixture
def no_wandb_env(monkeypatch, tmp_path):
    for k in WANDB_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: 'auto' means offline


def records(path: Path):
    """The protobuf records of a ``.wandb`` file (wandb's LevelDB-style log: 7-byte header,
    32 KiB blocks, each chunk ``crc32 u32, length u16, type u8`` with 1 full, 2 first,
    3 middle, 4 last)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf + chunk if kind == 4 else chunk)
            yield rec
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk


def read_run(folder: Path) -> dict:
    """What one offline run folder recorded: its run record, config, history keys, summary,
    alerts and artifacts."""
    out = {
        "run": None,
        "config": {},
        "history": set(),
        "summary": {},
        "alerts": [],
        "artifacts": [],
    }
    for rec in records(next(folder.glob("*.wandb"))):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = rec.run
            out["config"].update({i.key: i.value_json for i in rec.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: i.value_json for i in rec.config.update})
        elif kind == "history":
            out["history"] |= {i.key or "/".join(i.nested_key) for i in rec.history.item}
        elif kind == "summary":
            out["summary"].update(
                {i.key or "/".join(i.nested_key): i.value_json for i in rec.summary.update}
            )
        elif kind == "alert":
            out["alerts"].append((rec.alert.title, rec.alert.text))
        elif kind == "artifact":
            out["artifacts"].append(
                (
                    rec.artifact.type,
                    rec.artifact.name,
                    [m.path for m in rec.artifact.manifest.contents],
                )
            )
    return out


def test_wandb_environment_variables_win_over_the_config(monkeypatch, no_wandb_env):
    assert wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode("auto") == "disabled" and wandb_mode("online") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # wandb's old name
    assert wandb_mode("disabled") == "offline"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_DISABLED", "true")
    assert wandb_mode("auto") == "disabled"
    monkeypatch.setenv("WANDB_TAGS", "a, b")
    monkeypatch.setenv("WANDB_PROJECT", "p")
    assert _settings(project="chessrl", entity="", group="g", tags=["x"]) == {
        "project": "p",
        "entity": "",
        "group": "g",
        "tags": ["a", "b"],
    }


def test_wandb_mode_disabled_in_the_environment_writes_no_wandb_run(
    tiny_config, tmp_path, monkeypatch, no_wandb_env
):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = load_config(tiny_config, ["logging.wandb='auto'", "trainer.steps=1"])
    run_dir = train(cfg, tmp_path / "run", progress=False, echo=lambda s: None)
    assert not (run_dir / "wandb").exists() and not (run_dir / WANDB_ID_FILE).exists()


def test_offline_run_resumes_the_same_wandb_run_with_findings_report_and_checkpoint(
    tiny_config, tmp_path, monkeypatch, no_wandb_env
):
    monkeypatch.setenv("WANDB_RUN_GROUP", "from-the-env")  # wins over logging.group
    overrides = [
        "logging.wandb='offline'",
        "logging.project='chessrl-test'",
        "logging.group='from-config'",
        "logging.tags=['tiny','ttt']",
        "logging.wandb_checkpoint=true",
        "trainer.steps=6",
        # an entropy floor nothing reaches never fires: the health monitor finds it 'dead'
        "plugins.entropy_floor.floor=0.0",
        "plugins.entropy_floor.action='warn'",
    ]
    cfg = load_config(tiny_config, overrides)
    lines: list[str] = []
    run_dir = train(cfg, tmp_path / "run", max_steps=4, progress=False, echo=lines.append)
    run_id = (run_dir / WANDB_ID_FILE).read_text().strip()
    first = next((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert any(
        f"wandb: offline run {run_id} in {first}; upload it with: wandb sync {first}" in line
        for line in lines
    )

    train(cfg, run_dir, resume=True, progress=False, echo=lines.append)
    # run.finish() only asks wandb's service to close the run; the service writes the rest of
    # the offline file after that (a process exits through the same wait). Wait for it here.
    wandb.teardown()
    folders = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(
        f.name.removesuffix("-1").endswith(f"-{run_id}") for f in folders
    )
    runs = [read_run(f) for f in folders]
    for r in runs:
        assert r["run"].run_id == run_id and r["run"].project == "chessrl-test"
        assert r["run"].run_group == "from-the-env" and list(r["run"].tags) == ["tiny", "ttt"]
        assert '"tictactoe"' in r["config"]["env"] and "entropy_floor" in r["config"]["plugins"]
        assert any(k.startswith("train/") for k in r["history"])
    assert any(
        title == "chessrl dead" and "entropy_floor" in text for title, text in runs[0]["alerts"]
    )
    assert "health/dead/entropy_floor" in runs[0]["summary"]  # one entry per rule and subject
    kinds = {(kind, tuple(sorted(paths))) for r in runs for kind, _, paths in r["artifacts"]}
    report = [paths for kind, paths in kinds if kind == "report"]
    assert report and all("report.md" in p and "report.html" in p for p in report)
    models = [paths for kind, paths in kinds if kind == "model"]
    assert len(models) == 2 and all(
        len(p) == 1 and p[0].endswith(".pt") for p in models
    )  # each invocation's last
