"""The example third-party regulariser (examples/plugins/chessrl_l2_init): installed as its own
package, found through the ``chessrl`` entry-point group, and its term acts on the gradient.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import site
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from chessrl import pluginmanager
from chessrl.pluginmanager import call_hook, new_plugin_manager
from chessrl.policy import Policy
from chessrl.regularisers import Coefficients
from chessrl.schema import build

PACKAGE = Path(__file__).resolve().parents[1] / "examples" / "plugins" / "chessrl_l2_init"


def _installed_from_here() -> bool:
    try:
        dist = importlib.metadata.distribution("chessrl-l2-init")
    except importlib.metadata.PackageNotFoundError:
        return False
    url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
    return dist.version == "0.1.0" and url.rstrip("/").endswith(PACKAGE.as_posix())


@pytest.fixture(scope="module")
def l2_init():
    """Install the example package (editable, as its tutorial does) and return its module and
    the fresh registry; a package this fixture installed is uninstalled afterwards, so the
    shared venv is left as it was found."""
    installed_here = not _installed_from_here()
    if installed_here:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--no-build-isolation",
                "-e",
                str(PACKAGE),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        importlib.invalidate_caches()
    if importlib.util.find_spec("chessrl_l2_init") is None:
        # an editable install is activated by a .pth file, which Python reads only at start-up
        site.addsitedir(sysconfig.get_path("purelib"))
    pluginmanager.reset_plugin_manager()
    try:
        yield importlib.import_module("chessrl_l2_init")
    finally:
        pluginmanager.reset_plugin_manager()
        if installed_here:
            subprocess.run(
                [sys.executable, "-m", "pip", "uninstall", "-q", "-y", "chessrl-l2-init"],
                check=True,
                capture_output=True,
                timeout=300,
            )
            sys.modules.pop("chessrl_l2_init", None)
            importlib.invalidate_caches()


def test_installed_plugin_is_discovered_with_its_version(l2_init) -> None:
    [row] = [r for r in pluginmanager.plugin_info() if r["name"] == "l2_init"]
    assert row["version"] == "0.1.0" and row["distribution"] == "chessrl-l2-init"
    assert row["regularisers"] == ["l2_init"] and row["module"] == "chessrl_l2_init"
    reg = pluginmanager.regularisers()["l2_init"]
    assert reg.obj is l2_init.L2Init and reg.plugin == "l2_init"


def tiny_policy() -> Policy:
    torch.manual_seed(0)
    return Policy(obs_vocab=5, obs_len=3, n_actions=4, d_model=8, n_layers=1, n_heads=2, d_ff=16)


def test_term_is_zero_at_start_then_pulls_moved_weights_back(l2_init) -> None:
    policy = tiny_policy()
    coefs = Coefficients()
    inst = l2_init.L2Init(
        "l2_init", build(l2_init.L2Init.Config, {"coef": 0.5}, prefix="plugins.l2_init"), coefs
    )
    pm = new_plugin_manager()
    pm.register(inst, name="l2_init")
    run = SimpleNamespace(
        config=None, policy=policy, coefs=coefs, run_dir=None, game=None, log=print
    )
    call_hook(pm, "chessrl_train_start", run=run)

    [(_, term)] = call_hook(pm, "chessrl_loss_terms", out=None, batch=None, coefs=coefs)
    assert term.name == "l2_init" and term.coef == 0.5 and term.raw.item() == 0.0

    with torch.no_grad():
        policy.head.bias.add_(torch.tensor([0.1, -0.2, 0.0, 0.3]))
    tokens = torch.randint(0, 5, (6, 3), generator=torch.Generator().manual_seed(1))

    def grads(with_term: bool) -> torch.Tensor:
        policy.zero_grad()
        loss = policy(tokens).logsumexp(-1).mean()  # any objective
        if with_term:
            [(_, t)] = call_hook(pm, "chessrl_loss_terms", out=None, batch=None, coefs=coefs)
            loss = loss + t.coef * t.raw
        loss.backward()
        return policy.head.bias.grad.clone()

    [(_, term)] = call_hook(pm, "chessrl_loss_terms", out=None, batch=None, coefs=coefs)
    assert term.raw.item() == pytest.approx(0.1**2 + 0.2**2 + 0.3**2)
    # d/dw coef * (w - w0)^2 = 2 coef (w - w0)
    delta = grads(True) - grads(False)
    assert delta.tolist() == pytest.approx([2 * 0.5 * d for d in (0.1, -0.2, 0.0, 0.3)], abs=1e-6)
    report = dict(call_hook(pm, "chessrl_step_end", metrics={}, step=1))["l2_init"]
    assert report.metrics["sq_dist"] == pytest.approx(0.14) and report.acted is None


def test_anchor_survives_a_checkpoint(l2_init) -> None:
    """A resumed run pulls towards the original start, not towards the weights it resumed from."""
    policy = tiny_policy()
    anchor = policy.head.bias.detach().clone()
    config = build(l2_init.L2Init.Config, {})
    first = l2_init.L2Init("l2_init", config, Coefficients())
    first.chessrl_train_start(SimpleNamespace(policy=policy))
    state = first.chessrl_state_dict()
    with torch.no_grad():
        policy.head.bias.add_(1.0)
    resumed = l2_init.L2Init("l2_init", config, Coefficients())
    resumed.chessrl_load_state_dict(state)  # the trainer restores state before train_start
    resumed.chessrl_train_start(SimpleNamespace(policy=policy))
    assert torch.equal(resumed.anchor["head.bias"], anchor)


def test_two_training_steps_through_the_cli(l2_init, tiny_config, tmp_path, cli) -> None:
    """The installed package, enabled from TOML, trains: its term is in the metrics and in the
    gradient."""
    run_dir = tmp_path / "run"
    res = cli(
        "run",
        str(tiny_config),
        "--run-dir",
        str(run_dir),
        "--max-steps",
        "2",
        "--no-progress",
        "--set",
        "plugins.l2_init.coef=10.0",
    )
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["budget/l2_init/value"] == 0.0  # the weights have not moved yet
    assert rows[1]["budget/l2_init/value"] > 0.0  # after one update they have
    assert rows[1]["budget/l2_init/grad_norm"] > 0.0  # and the term pulls on the gradient
    assert (
        rows[1]["budget/l2_init/cos_objective"] == rows[1]["budget/l2_init/cos_objective"]
    )  # not NaN


def test_config_reference_lists_the_installed_plugins_options(l2_init, cli) -> None:
    res = cli("config", "reference")
    assert res.returncode == 0, res.stderr
    assert "### `l2_init` (from chessrl-l2-init 0.1.0)" in res.stdout
    assert "| `plugins.l2_init.coef` | a number | `0.001` | Weight of the term" in res.stdout
    builtin = cli("config", "reference", "--builtin")
    assert "l2_init" not in builtin.stdout and "### `entropy_bonus`" in builtin.stdout


def test_a_source_folder_that_shadows_the_installed_module_is_named(
    l2_init, tiny_config, cli
) -> None:
    """``python -m chessrl`` from examples/plugins/ (the tutorial's own layout): the folder
    chessrl_l2_init/ is imported as an empty namespace package instead of the installed module."""
    where = PACKAGE.parent
    res = cli("plugins", cwd=where)
    assert res.returncode == 0
    row = next(line for line in res.stdout.splitlines() if line.startswith("l2_init"))
    assert f"BROKEN: module 'chessrl_l2_init' is shadowed by the folder {PACKAGE}" in row
    assert "run chessrl from another directory" in row
    run = cli(
        "run", str(tiny_config), "--max-steps", "1", "--set", "plugins.l2_init.coef=1e-3", cwd=where
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert (
        f"plugin 'l2_init' (chessrl-l2-init 0.1.0) is installed but failed to load: "
        f"module 'chessrl_l2_init' is shadowed by the folder {PACKAGE}" in last
    )
