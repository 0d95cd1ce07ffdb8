"""``policy.cpu_bf16``: bf16 autocast on a CPU with native bf16 matrix instructions. It must
keep the RL invariants (one log-prob function, the first epoch's ratio exactly 1), stay close
to float32, and be ignored, with one line in the run's log, on a CPU without bf16."""

from __future__ import annotations

import pytest
import torch

from chessrl.config import load_config
from chessrl.metrics import read_metrics
from chessrl.policy import Policy, cpu_has_bf16, log_probs
from chessrl.trainer import train

needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16")


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert not cpu_has_bf16(str(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile\n")
    assert cpu_has_bf16(str(info))
    info.write_text("flags\t\t: avx512_bf16\n")
    assert cpu_has_bf16(str(info))
    assert not cpu_has_bf16(str(tmp_path / "missing"))


@needs_bf16
def test_bf16_log_probs_and_gradients_stay_close_to_float32():
    torch.manual_seed(0)
    policy = Policy(40, 17, 30, d_model=64, n_layers=2, n_heads=4, d_ff=128, head_dim=8)
    tokens = torch.randint(0, 40, (48, 17))
    mask = torch.rand(48, 30) < 0.5
    mask[:, 0] = True
    weights = torch.randn(48, 30)

    def run(bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
        policy.cpu_bf16 = bf16
        policy.zero_grad()
        lp = log_probs(policy, tokens, mask, 1.3)
        assert lp.dtype == torch.float32
        lp.exp().mul(weights).sum().backward()
        grad = torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None])
        return lp.detach(), grad

    lp32, g32 = run(False)
    lp16, g16 = run(True)
    assert not torch.equal(lp16, lp32)  # bf16 really ran
    assert (lp16[mask].exp() - lp32[mask].exp()).abs().max() < 0.02
    assert torch.isinf(lp16[~mask]).all()
    cos = torch.nn.functional.cosine_similarity(g16, g32, dim=0)
    assert cos > 0.98, float(cos)


@needs_bf16
def test_bf16_training_keeps_the_first_ratio_exactly_one(tiny_config, tmp_path):
    cfg = load_config(tiny_config, ["policy.cpu_bf16=true", "trainer.steps=3"])
    run_dir = train(cfg, tmp_path / "run", progress=False, echo=lambda s: None)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert len(rows) == 3
    assert all(
        r["train/ratio_first_epoch"] == 1.0 and r["train/ratio_first_epoch_maxdev"] == 0.0
        for r in rows
    )
    # sampling and training share the function; bf16 kernels may round a batch of another
    # size differently, which the drift measures (a temperature mismatch would be ~0.1 or more)
    assert all(r["rollout/logprob_drift"] < 0.02 for r in rows)


def test_cpu_bf16_on_a_cpu_without_it_says_so_and_runs_float32(tiny_config, tmp_path, monkeypatch):
    from chessrl import policy as policy_module

    monkeypatch.setattr(policy_module, "cpu_has_bf16", lambda: False)
    cfg = load_config(tiny_config, ["policy.cpu_bf16=true", "trainer.steps=1"])
    lines: list[str] = []
    run_dir = train(cfg, tmp_path / "run", progress=False, echo=lines.append)
    assert any(line.startswith("policy.cpu_bf16 is ignored: this CPU has no") for line in lines)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert rows[0]["rollout/logprob_drift"] == 0.0  # float32: sampling and training agree


@needs_bf16
def test_a_checkpoint_is_evaluated_at_the_precision_its_run_used(tiny_config, tmp_path):
    from chessrl.player import load_player

    for flag in (True, False):
        cfg = load_config(tiny_config, [f"policy.cpu_bf16={str(flag).lower()}", "trainer.steps=1"])
        run_dir = train(cfg, tmp_path / f"run{flag}", progress=False, echo=lambda s: None)
        assert load_player(run_dir).policy.cpu_bf16 is flag
