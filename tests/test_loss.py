"""RL correctness invariants of the loss, on real tic-tac-toe rollouts through TorchRL."""

import copy

import pytest
import torch

from chessrl import pluginmanager
from chessrl.env import BoardGameEnv
from chessrl.loss import GroupPolicyLoss, exact_entropy, exact_kl, loss_entries, total_loss
from chessrl.policy import Policy, log_probs
from chessrl.rollout import collect


def _game():
    reg = pluginmanager.games()["tictactoe"]
    return reg.obj(reg.schema(), 0)


def _rollout(policy, temperature, seed=0):
    game = _game()
    env = BoardGameEnv(game, batch_size=(3, 4), seed=seed)
    td = collect(
        env,
        policy,
        plies=9,
        temperature=temperature,
        train_plies="both",
        generator=torch.Generator().manual_seed(seed),
    )
    flat = td.reshape(-1)
    batch = flat[flat["loss_mask"]].select(
        "observation", "action_mask", "action", "sample_log_prob"
    )
    batch["advantage"] = torch.randn(len(batch), generator=torch.Generator().manual_seed(1))
    return batch


@pytest.fixture
def policy():
    torch.manual_seed(0)
    p = Policy(3, 9, 9, d_model=32, n_layers=2, n_heads=4, d_ff=64)
    torch.nn.init.normal_(p.head.weight, std=0.5)  # a non-uniform policy, so ratios could differ
    return p.eval()


def test_first_epoch_ratio_is_exactly_one(policy):
    batch = _rollout(policy, 1.3)
    with torch.no_grad():
        batch["old_log_probs_all"] = log_probs(
            policy, batch["observation"], batch["action_mask"], 1.3
        )
    # the rollout's own sampling log-probs agree with the recompute
    taken = batch["old_log_probs_all"].gather(-1, batch["action"][:, None]).squeeze(-1)
    assert torch.equal(taken, batch["sample_log_prob"])
    out = GroupPolicyLoss(policy, temperature=1.3)(batch)
    ratio = (out["log_probs"] - taken).exp()
    assert torch.equal(ratio, torch.ones_like(ratio))
    assert out["clip_fraction"] == 0.0
    assert out["kl_old_exact"].abs() < 1e-6


def test_temperature_mismatch_breaks_the_ratio(policy):
    """The analysed run's bug: sampling at 1.3, training at 1.0. The check must see it."""
    batch = _rollout(policy, 1.3)
    batch["old_log_probs_all"] = torch.zeros(len(batch), 9)
    batch["old_log_probs_all"] = batch["old_log_probs_all"].scatter(
        -1, batch["action"][:, None], batch["sample_log_prob"][:, None]
    )
    out = GroupPolicyLoss(policy, temperature=1.0)(batch)
    ratio = (out["log_probs"] - batch["sample_log_prob"]).exp()
    assert (ratio - 1).abs().max() > 1e-3


def test_masked_plies_contribute_nothing(policy):
    batch = _rollout(policy, 1.0)
    with torch.no_grad():
        batch["old_log_probs_all"] = log_probs(
            policy, batch["observation"], batch["action_mask"], 1.0
        )
    n = len(batch)
    mask = torch.arange(n) % 2 == 0
    batch["loss_mask"] = mask
    loss = GroupPolicyLoss(policy, temperature=1.0)

    def grads(b):
        policy.zero_grad()
        out = loss(b)
        (out["loss_objective"] - 0.1 * out["entropy"] + out["kl_old_exact"]).backward()
        return out, [p.grad.clone() for p in policy.parameters()]

    out1, g1 = grads(batch)
    garbage = batch.clone()
    garbage["advantage"] = torch.where(mask, garbage["advantage"], torch.full((n,), 1e6))
    garbage["old_log_probs_all"] = torch.where(
        mask[:, None],
        garbage["old_log_probs_all"],
        torch.full_like(garbage["old_log_probs_all"], -30.0),
    )
    out2, g2 = grads(garbage)
    for k in ("loss_objective", "entropy", "kl_old_exact", "clip_fraction"):
        assert torch.equal(out1[k], out2[k]), k
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)


def test_exact_entropy_and_kl_match_hand_computation():
    mask = torch.tensor([[True, True, False, True]])
    p = torch.tensor([[0.5, 0.25, 0.0, 0.25]])
    q = torch.tensor([[0.25, 0.25, 0.0, 0.5]])
    lp, lq = p.log(), q.log()
    assert torch.allclose(
        exact_entropy(lp, mask), torch.tensor([1.5 * torch.log(torch.tensor(2.0))])
    )
    expected = 0.5 * torch.log(torch.tensor(2.0)) + 0.25 * torch.log(torch.tensor(0.5))
    assert torch.allclose(exact_kl(lp, lq, mask), expected.reshape(1))


def test_clip_fraction_counts_only_binding_clips(policy):
    batch = _rollout(policy, 1.0)
    with torch.no_grad():
        lp = log_probs(policy, batch["observation"], batch["action_mask"], 1.0)
    moved = copy.deepcopy(policy)
    with torch.no_grad():
        moved.head.weight.mul_(3.0)
    batch["old_log_probs_all"] = lp
    out = GroupPolicyLoss(moved, temperature=1.0, clip_low=0.2, clip_high=0.2)(batch)
    ratio = (out["log_probs"] - lp.gather(-1, batch["action"][:, None]).squeeze(-1)).exp().detach()
    adv = batch["advantage"]
    expected = (((adv > 0) & (ratio > 1.2)) | ((adv < 0) & (ratio < 0.8))).float().mean()
    assert torch.allclose(out["clip_fraction"], expected)
    assert 0 < float(expected) < 1


def test_only_loss_entries_are_summed_and_keys_follow_set_keys(policy):
    batch = _rollout(policy, 1.0)
    with torch.no_grad():
        batch["old_log_probs_all"] = log_probs(
            policy, batch["observation"], batch["action_mask"], 1.0
        )
    loss = GroupPolicyLoss(policy)
    out = loss(batch)
    out["loss_extra"] = 2 * out["entropy"]  # what a plugin's term adds
    assert loss_entries(out).keys() == {"objective", "extra"}
    assert torch.equal(total_loss(out), out["loss_objective"] + out["loss_extra"])
    assert set(out.keys()) <= {*loss.out_keys, "loss_extra"}
    assert all(k in loss.out_keys for k in out.keys() if not k.startswith("loss_"))
    loss.set_keys(loss_mask="trained", old_log_probs_all="old")
    assert loss.loss_mask_key == "trained" and {"trained", "old"} <= set(loss.in_keys)
    renamed = batch.clone().rename_key_("old_log_probs_all", "old")
    renamed["trained"] = torch.arange(len(batch)) % 2 == 0
    masked = batch.clone()
    masked["loss_mask"] = renamed["trained"]
    assert torch.equal(
        loss(renamed)["loss_objective"], GroupPolicyLoss(policy)(masked)["loss_objective"]
    )
    with pytest.raises(ValueError):
        loss.set_keys(old_log_prob="typo")  # a misspelt key fails loudly


def test_logits_all_are_the_networks_logits_behind_the_log_probs(policy):
    """``logits_all`` (for terms on the logits, e.g. a z-loss) comes from the same forward as
    ``log_probs_all``: the network's untempered logits, with grad."""
    batch = _rollout(policy, 1.3)
    with torch.no_grad():
        batch["old_log_probs_all"] = log_probs(
            policy, batch["observation"], batch["action_mask"], 1.3
        )
    out = GroupPolicyLoss(policy, temperature=1.3)(batch)
    logits, legal = out["logits_all"], batch["action_mask"]
    with torch.no_grad():
        assert torch.allclose(logits, policy(batch["observation"]).float(), atol=1e-5)
    tempered = (logits / 1.3).masked_fill(~legal, float("-inf"))
    want = torch.log_softmax(tempered, -1)[legal]
    assert torch.allclose(want, out["log_probs_all"][legal], atol=1e-6)
    z = torch.logsumexp(logits.masked_fill(~legal, float("-inf")), -1).pow(2).mean()
    z.backward()
    assert policy.head.weight.grad is not None and policy.head.weight.grad.abs().sum() > 0
