"""The four built-in regularisers: their math against hand-computed values, the controllers over
scripted metric sequences, checkpoint state, misconfiguration errors and the TOML path.

Plugins are built the way the trainer builds them (strict ``Config`` from a dict, ``cls(name,
config, coefs)``, one :class:`chessrl.regularisers.Regularisers` in config order) and driven
through it, the trainer's only way of calling them (its hooks go through pluggy).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from tensordict import TensorDict

from chessrl import hookimpl
from chessrl.config import from_dict
from chessrl.errors import PluginError, UserError
from chessrl.loss import GroupPolicyLoss
from chessrl.pluginmanager import call_hook, regularisers
from chessrl.policy import Policy
from chessrl.regularisers import (
    Coefficients,
    LossTerm,
    PluginReport,
    Regulariser,
    Regularisers,
    RunView,
)
from chessrl.schema import build

# --- harness: what the trainer does with plugins ----------------------------------------


class Harness:
    """One run's plugins: a Coefficients object and, once used, their :class:`Regularisers`."""

    def __init__(
        self, *specs: tuple[str, dict[str, Any]], extra: tuple[tuple[str, Regulariser], ...] = ()
    ):
        self.coefs = Coefficients()
        self.plugins: dict[str, Any] = {}
        self._regs: Regularisers | None = None
        for name, options in specs:
            cls = regularisers()[name].obj
            inst = cls(name, build(cls.Config, options, prefix=f"plugins.{name}"), self.coefs)
            self.add(name, inst)
        for name, inst in extra:
            self.add(name, inst)

    def add(self, name: str, inst: Any) -> None:
        assert self._regs is None, "add every plugin before the first hook call"
        self.plugins[name] = inst

    @property
    def regs(self) -> Regularisers:
        if self._regs is None:
            self._regs = Regularisers(list(self.plugins.items()), self.coefs)
        return self._regs

    @property
    def pm(self) -> Any:
        return self.regs.pm

    def train_start(self) -> None:
        run = RunView(
            config=None,
            run_dir=None,
            game=None,
            policy=torch.nn.Linear(2, 2),
            coefs=self.coefs,
            log=lambda line: None,
        )
        self.regs.train_start(run)

    def step(self, metrics: dict[str, float], step: int = 0) -> dict[str, PluginReport]:
        """The trainer's end of step: adjust coefficients in order, then collect reports."""
        self.coefs.begin_step()
        self.regs.adjust_coefficients(metrics, step)
        return dict(self.regs.hook("chessrl_step_end", metrics=metrics, step=step))


# --- a tiny policy whose distribution is known by hand ----------------------------------
# With a zero head weight the logits are the head bias for every observation. Bias
# log([1, 2, 3, 1]) gives probabilities proportional to [1, 2, 3, 1] over the legal moves.

WEIGHTS = [1.0, 2.0, 3.0, 1.0]
LEGAL = [[0, 1, 2, 3], [0, 1], [1, 2, 3]]
ACTIONS = [2, 0, 3]


def hand_probs() -> list[dict[int, float]]:
    """Per row: legal action -> probability, computed without torch."""
    rows = []
    for legal in LEGAL:
        z = sum(WEIGHTS[a] for a in legal)
        rows.append({a: WEIGHTS[a] / z for a in legal})
    return rows


def hand_uniform() -> list[dict[int, float]]:
    return [{a: 1.0 / len(legal) for a in legal} for legal in LEGAL]


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def tiny_policy() -> Policy:
    torch.manual_seed(0)
    policy = Policy(obs_vocab=5, obs_len=3, n_actions=4, d_model=8, n_layers=1, n_heads=2, d_ff=16)
    with torch.no_grad():
        policy.head.weight.zero_()  # logits = bias for every observation
        policy.head.bias.copy_(torch.tensor([math.log(w) for w in WEIGHTS]))
    return policy


def loss_out(policy: Policy) -> TensorDict:
    """GroupPolicyLoss output on three plies; old and reference policies are uniform over legal
    moves."""
    mask = torch.zeros(3, 4, dtype=torch.bool)
    for i, legal in enumerate(LEGAL):
        mask[i, legal] = True
    uniform = torch.log(mask.float() / mask.float().sum(-1, keepdim=True))
    batch = TensorDict(
        observation=torch.randint(0, 5, (3, 3), generator=torch.Generator().manual_seed(1)),
        action_mask=mask,
        action=torch.tensor(ACTIONS),
        old_log_probs_all=uniform,
        ref_log_probs_all=uniform,
        advantage=torch.tensor([1.0, -1.0, 0.5]),
        batch_size=[3],
    )
    return GroupPolicyLoss(policy)(batch)


def hand_entropy() -> float:
    return mean([-sum(p * math.log(p) for p in row.values()) for row in hand_probs()])


def hand_kl(reference: str, estimator: str) -> float:
    """KL by hand. 'initial': KL(pi || ref) with samples from pi; 'old': KL(old || pi)."""
    p_rows, q_rows = hand_probs(), hand_uniform()
    if estimator == "exact":
        if reference == "initial":
            return mean(
                [sum(p[a] * math.log(p[a] / q[a]) for a in p) for p, q in zip(p_rows, q_rows)]
            )
        return mean([sum(q[a] * math.log(q[a] / p[a]) for a in q) for p, q in zip(p_rows, q_rows)])
    # sampled estimators at the taken actions, with log r = log q(a) - log pi(a)
    log_r = [math.log(q[a] / p[a]) for p, q, a in zip(p_rows, q_rows, ACTIONS)]
    if reference == "old":
        log_r = [-x for x in log_r]  # the loss's ratio is pi / pi_old
    if estimator == "k1":
        return mean([-x for x in log_r])
    return mean([math.exp(x) - 1 - x for x in log_r])


# --- entropy_bonus ----------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["exact", "sample"])
def test_entropy_bonus_term_is_minus_entropy(estimator: str) -> None:
    h = Harness(("entropy_bonus", {"coef": 0.03, "estimator": estimator}))
    out = loss_out(tiny_policy())
    [(plugin, term)] = call_hook(h.pm, "chessrl_loss_terms", out=out, batch=None, coefs=h.coefs)
    expected = (
        hand_entropy()
        if estimator == "exact"
        else mean([-math.log(p[a]) for p, a in zip(hand_probs(), ACTIONS)])
    )
    assert plugin == "entropy_bonus" and isinstance(term, LossTerm)
    assert term.name == "entropy_bonus" and term.coef == 0.03
    assert term.raw.item() == pytest.approx(-expected, rel=1e-5)
    report = h.step({"budget/entropy_bonus/raw": term.raw.item()})["entropy_bonus"]
    assert report.metrics == pytest.approx({"entropy": expected, "coef": 0.03}, rel=1e-5)
    assert report.acted is None and report.at_bound is None  # a fixed term


def test_entropy_bonus_gradient_matches_hand_derivative() -> None:
    """d(-H)/d logit_i = p_i (log p_i + H) per row on legal moves, 0 on illegal ones; rows averaged.

    Illegal moves have log-prob -inf, so a naive ``p * log p`` gives NaN gradients.
    """
    policy = tiny_policy()
    h = Harness(("entropy_bonus", {}))
    [(_, term)] = call_hook(
        h.pm, "chessrl_loss_terms", out=loss_out(policy), batch=None, coefs=h.coefs
    )
    term.raw.backward()
    expected = [0.0] * 4
    for row in hand_probs():
        ent = -sum(p * math.log(p) for p in row.values())
        for a, p in row.items():
            expected[a] += p * (math.log(p) + ent) / len(LEGAL)
    assert policy.head.bias.grad.tolist() == pytest.approx(expected, abs=1e-6)


# --- kl_penalty -------------------------------------------------------------------------


@pytest.mark.parametrize("reference", ["initial", "old"])
@pytest.mark.parametrize("estimator", ["exact", "k1", "k3"])
def test_kl_penalty_reads_the_configured_estimate(reference: str, estimator: str) -> None:
    h = Harness(("kl_penalty", {"coef": 0.5, "estimator": estimator, "reference": reference}))
    inst = h.plugins["kl_penalty"]
    assert inst.needs_reference is (reference == "initial")
    [(_, term)] = call_hook(
        h.pm, "chessrl_loss_terms", out=loss_out(tiny_policy()), batch=None, coefs=h.coefs
    )
    assert term.coef == 0.5
    assert term.raw.item() == pytest.approx(hand_kl(reference, estimator), rel=1e-5, abs=1e-7)
    report = h.step({"budget/kl_penalty/raw": term.raw.item()})["kl_penalty"]
    assert report.metrics["kl"] == pytest.approx(hand_kl(reference, estimator), rel=1e-5, abs=1e-7)
    assert report.acted is None


def test_kl_penalty_without_reference_in_out_names_the_key() -> None:
    h = Harness(("kl_penalty", {"reference": "initial"}))
    out = TensorDict({"kl_old_exact": torch.tensor(0.1)}, batch_size=[])
    with pytest.raises(Exception, match="kl_ref_exact"):
        call_hook(h.pm, "chessrl_loss_terms", out=out, batch=None, coefs=h.coefs)


# --- adaptive_kl ------------------------------------------------------------------------


def kl_metrics(kl: float, plies: int = 100) -> dict[str, float]:
    return {"budget/kl_penalty/raw": kl, "rollout/trained_plies": plies, "train/entropy": 2.0}


def test_adaptive_kl_multiplicative_saturates_holds_then_comes_down() -> None:
    """The analysed run: KL stays 3-6x above target, so the coefficient sits at its max."""
    h = Harness(
        ("kl_penalty", {"coef": 0.012}),
        (
            "adaptive_kl",
            {"rule": "multiplicative", "target": 0.012, "rate": 1.2, "min": 1e-3, "max": 0.1},
        ),
    )
    h.train_start()
    coef = 0.012
    steps_to_max = math.ceil(math.log(0.1 / 0.012) / math.log(1.2))  # 12
    for step in range(steps_to_max + 5):
        report = h.step(kl_metrics(0.05), step)["adaptive_kl"]
        coef = min(coef * 1.2, 0.1)
        assert h.coefs.get("kl") == pytest.approx(coef)
        reached = step >= steps_to_max - 1
        assert report.at_bound is reached
        # at the max the clamp leaves the coefficient unchanged: saturated, not acting
        assert report.acted is (step <= steps_to_max - 1)
        assert report.metrics["kl_ratio"] == pytest.approx(0.05 / 0.012)
    assert h.coefs.get("kl") == 0.1
    report = h.step(kl_metrics(0.001))["adaptive_kl"]
    assert h.coefs.get("kl") == pytest.approx(0.1 / 1.2)
    assert report.acted is True and report.at_bound is False
    for _ in range(30):
        report = h.step(kl_metrics(0.001))["adaptive_kl"]
    assert h.coefs.get("kl") == pytest.approx(1e-3) and report.at_bound is True
    assert h.coefs["kl"].history == []  # no change this step: the clamp held it at min


def test_adaptive_kl_proportional_rule_values() -> None:
    h = Harness(
        ("kl_penalty", {"coef": 0.1}),
        ("adaptive_kl", {"rule": "proportional", "target": 0.02, "horizon": 1000}),
    )
    h.train_start()
    expected = 0.1
    # e = clip(KL / target - 1, -0.2, 0.2); coef *= 1 + e * n / horizon with n = 100 plies
    for kl, e in [(0.03, 0.2), (0.021, 0.05), (0.02, 0.0), (0.01, -0.2), (0.019, -0.05)]:
        report = h.step(kl_metrics(kl, plies=100))["adaptive_kl"]
        expected *= 1 + e * 100 / 1000
        assert h.coefs.get("kl") == pytest.approx(expected, rel=1e-12)
        assert report.acted is (e != 0.0)
        assert report.metrics["kl"] == kl and report.metrics["coef"] == pytest.approx(expected)


def test_adaptive_kl_proportional_batch_size_option_overrides_metric() -> None:
    h = Harness(
        ("kl_penalty", {"coef": 0.1}),
        ("adaptive_kl", {"target": 0.02, "horizon": 1000, "batch_size": 500}),
    )
    h.train_start()
    h.step({"budget/kl_penalty/raw": 0.03})  # no rollout/trained_plies needed
    assert h.coefs.get("kl") == pytest.approx(0.1 * (1 + 0.2 * 500 / 1000))


def test_adaptive_kl_missing_metric_lists_available_keys() -> None:
    h = Harness(("kl_penalty", {}), ("adaptive_kl", {"metric": "train/kl_ref_exact"}))
    h.train_start()
    with pytest.raises(
        UserError, match=r"plugins\.adaptive_kl: metric 'train/kl_ref_exact'.*budget/kl_penalty/raw"
    ):
        h.step({"budget/kl_penalty/raw": 0.1, "train/kl_old_exact": 0.0})


def test_adaptive_kl_non_finite_kl_leaves_coefficient() -> None:
    h = Harness(("kl_penalty", {"coef": 0.05}), ("adaptive_kl", {"rule": "multiplicative"}))
    h.train_start()
    report = h.step(kl_metrics(math.nan))["adaptive_kl"]
    assert h.coefs.get("kl") == 0.05 and report.acted is False and "nan" in report.message


def test_adaptive_kl_init_applies_once_and_not_after_resume() -> None:
    h = Harness(("kl_penalty", {"coef": 0.001}), ("adaptive_kl", {"init": 0.05}))
    h.train_start()
    assert h.coefs.get("kl") == 0.05
    states = dict(kv for _, d in call_hook(h.pm, "chessrl_state_dict") for kv in d.items())
    coef_state = h.coefs.state_dict()

    resumed = Harness(("kl_penalty", {"coef": 0.001}), ("adaptive_kl", {"init": 0.05}))
    resumed.coefs.load_state_dict({**coef_state, "kl": 0.2})  # the checkpointed value differs
    call_hook(resumed.pm, "chessrl_load_state_dict", states=states)
    resumed.train_start()
    assert resumed.coefs.get("kl") == 0.2


# --- entropy_floor ----------------------------------------------------------------------


def floor_run(**options: Any) -> Harness:
    h = Harness(
        ("entropy_bonus", {"coef": 0.01}),
        ("entropy_floor", {"floor": 1.0, "patience": 3, **options}),
    )
    h.train_start()
    return h


def ent(x: float) -> dict[str, float]:
    return {"train/entropy": x, "budget/entropy_bonus/raw": -x}


def test_entropy_floor_never_fires_while_entropy_stays_above() -> None:
    """The analysed run: floor 1.5, entropy 2.6-3.1 for 6,800 steps; the monitor never fired."""
    h = floor_run(floor=1.5)
    for step in range(200):
        report = h.step(ent(2.6 + 0.5 * math.sin(step)), step)["entropy_floor"]
        assert report.acted is False and report.stop is None and report.message is None
    assert report.metrics == {
        "entropy": pytest.approx(2.6 + 0.5 * math.sin(199)),
        "below_floor": 0.0,
        "consecutive_low_steps": 0.0,
        "times_fired": 0.0,
        "coef": 0.01,
    }
    assert h.coefs.get("entropy") == 0.01


def test_entropy_floor_boosts_exactly_after_patience_and_caps() -> None:
    h = floor_run(boost_factor=2.0, max_coef=0.05)
    expected_coefs = [0.02, 0.04, 0.05, 0.05]  # capped at max_coef, then held there
    for fire, coef in enumerate(expected_coefs, start=1):
        for k in range(1, 4):
            report = h.step(ent(0.5))["entropy_floor"]
            fired = k == 3
            assert report.acted is fired
            # the counter resets to 0 when it fires
            assert report.metrics["consecutive_low_steps"] == (0 if fired else k)
            assert report.metrics["below_floor"] == 1.0
        assert h.coefs.get("entropy") == pytest.approx(coef)
        assert report.metrics["times_fired"] == fire and "->" in report.message
        assert report.at_bound is (coef == 0.05)
    assert h.coefs["entropy"].history == []  # the last fire could not raise it


def test_entropy_floor_counts_only_consecutive_low_steps() -> None:
    h = floor_run()
    for x in [0.5, 0.5, 1.0, 0.5, 0.5, 2.0, 0.5, 0.5, math.nan, 0.5]:  # 1.0 == floor is not low
        assert h.step(ent(x))["entropy_floor"].acted is False
    assert h.step(ent(0.5))["entropy_floor"].acted is False
    assert h.step(ent(0.5))["entropy_floor"].acted is True


def test_entropy_floor_warn_and_stop_leave_the_coefficient() -> None:
    for action in ("warn", "stop"):
        h = floor_run(action=action)
        reports = [h.step(ent(0.2))["entropy_floor"] for _ in range(3)]
        assert [r.acted for r in reports] == [False, False, True]
        assert "entropy 0.2 < floor 1 for 3 steps" in reports[-1].message
        assert (reports[-1].stop is not None) is (action == "stop")
        assert reports[-1].at_bound is None and h.coefs.get("entropy") == 0.01


def test_entropy_floor_warn_needs_no_entropy_bonus() -> None:
    h = Harness(("entropy_floor", {"action": "warn", "patience": 1}))
    h.train_start()
    report = h.step({"train/entropy": 0.0})["entropy_floor"]
    assert report.acted is True and "coef" not in report.metrics


def test_entropy_floor_state_dict_round_trip_mid_count() -> None:
    h = floor_run(boost_factor=2.0)
    for x in [0.5, 0.5, 0.5, 0.5, 0.5]:  # fires once, then two low steps
        h.step(ent(x))
    states = dict(kv for _, d in call_hook(h.pm, "chessrl_state_dict") for kv in d.items())
    assert states["entropy_floor"] == {"consecutive_low": 2, "times_fired": 1}
    assert states["entropy_bonus"] == {}

    resumed = floor_run(boost_factor=2.0)
    call_hook(resumed.pm, "chessrl_load_state_dict", states=states)
    report = resumed.step(ent(0.5))["entropy_floor"]  # the third low step after the first fire
    assert report.acted is True and report.metrics["times_fired"] == 2


# --- misconfiguration -------------------------------------------------------------------


def test_entropy_floor_boost_without_entropy_bonus_fails_at_train_start() -> None:
    h = Harness(("entropy_floor", {}))
    with pytest.raises(
        UserError, match=r"plugins\.entropy_floor: adjusts coefficient 'entropy'.*entropy_bonus"
    ):
        h.train_start()


def test_adaptive_kl_without_kl_penalty_fails_at_train_start() -> None:
    h = Harness(("entropy_bonus", {}), ("adaptive_kl", {}))
    with pytest.raises(
        UserError, match=r"plugins\.adaptive_kl: adjusts coefficient 'kl'.*kl_penalty"
    ):
        h.train_start()


@pytest.mark.parametrize(
    "specs, match",
    [
        (
            (("entropy_bonus", {"coef": 0.2}), ("entropy_floor", {"max_coef": 0.1})),
            "max_coef = 0.1 is below",
        ),
        ((("entropy_bonus", {"coef": 0.0}), ("entropy_floor", {})), "'entropy' is 0"),
        ((("kl_penalty", {"coef": 0.0}), ("adaptive_kl", {})), "'kl' starts at 0"),
    ],
)
def test_controllers_refuse_coefficients_they_cannot_move(specs, match) -> None:
    with pytest.raises(UserError, match=match):
        Harness(*specs).train_start()


@pytest.mark.parametrize(
    "options, match",
    [
        ({"min": 0.5, "max": 0.1}, "min = 0.5 exceeds max = 0.1"),
        ({"init": 2.0}, r"init = 2.0 is outside"),
        ({"rule": "pid"}, r"'plugins.adaptive_kl.rule' = 'pid' is not allowed"),
    ],
)
def test_adaptive_kl_config_errors(options, match) -> None:
    with pytest.raises(UserError, match=match):
        Harness(("kl_penalty", {}), ("adaptive_kl", options))


def base_config(plugins: dict) -> dict:
    return {"env": {"name": "tictactoe"}, "plugins": plugins}


def test_toml_unknown_option_names_plugin_and_option() -> None:
    with pytest.raises(UserError) as err:
        from_dict(base_config({"entropy_bonus": {"coef": 0.01, "cof": 1}}))
    assert "unknown key 'plugins.entropy_bonus.cof'" in str(err.value)
    assert "did you mean 'coef'" in str(err.value)


def test_toml_builds_every_builtin_config() -> None:
    cfg = from_dict(
        base_config(
            {
                "entropy_bonus": {"coef": 0.02, "estimator": "sample"},
                "kl_penalty": {},
                "adaptive_kl": {"target": 0.05},
                "entropy_floor": {"action": "warn"},
            }
        )
    )
    assert list(cfg.plugins) == ["entropy_bonus", "kl_penalty", "adaptive_kl", "entropy_floor"]
    assert (
        cfg.plugins["entropy_bonus"].estimator == "sample"
        and cfg.plugins["adaptive_kl"].init is None
    )


# --- ordering: several plugins on one coefficient ----------------------------------------


class Cap(Regulariser):
    """A throwaway controller: caps ``entropy`` at 0.15 every step."""

    @hookimpl
    def chessrl_adjust_coefficients(self, coefs: Coefficients) -> None:
        coefs.set("entropy", min(coefs.get("entropy"), 0.15), by=self.name)


@pytest.mark.parametrize("cap_first, expected", [(False, 0.15), (True, 0.2)])
def test_two_controllers_on_one_coefficient_run_in_config_order(
    cap_first: bool, expected: float
) -> None:
    """floor then cap: 0.1 -> 0.2 -> 0.15. cap then floor: 0.1 -> 0.1 -> 0.2."""
    h = Harness(("entropy_bonus", {"coef": 0.1}))
    floor = ("entropy_floor", {"patience": 1, "boost_factor": 2.0, "max_coef": 1.0})
    cap = Cap("cap", None, h.coefs)
    if cap_first:
        h.add("cap", cap)
    inst = regularisers()["entropy_floor"].obj
    h.add(floor[0], inst(floor[0], build(inst.Config, floor[1]), h.coefs))
    if not cap_first:
        h.add("cap", cap)
    h.train_start()
    h.step(ent(0.1))
    assert h.coefs.get("entropy") == pytest.approx(expected)
    by = [who for who, _, _ in h.coefs["entropy"].history]
    assert by == (["entropy_floor"] if cap_first else ["entropy_floor", "cap"])


def test_controller_before_its_term_in_config_is_fine() -> None:
    """A controller validates in train_start, after every plugin has declared its coefficient."""
    results = []
    for specs in (
        [("kl_penalty", {"coef": 0.01}), ("adaptive_kl", {"rule": "multiplicative"})],
        [("adaptive_kl", {"rule": "multiplicative"}), ("kl_penalty", {"coef": 0.01})],
    ):
        h = Harness(*specs)
        h.train_start()
        h.step(kl_metrics(1.0))
        results.append(h.coefs.get("kl"))
    assert results == pytest.approx([0.015, 0.015])


# --- the run's Regularisers: one object, typed methods, hooks through pluggy -------------


class Twice(Regulariser):
    """Written against the hooks (the documented style before typed methods): two terms."""

    @hookimpl
    def chessrl_loss_terms(self, out, coefs):
        return [LossTerm("twice_a", 1.0, out["entropy"]), LossTerm("twice_b", 2.0, out["entropy"])]

    @hookimpl
    def chessrl_step_end(self):
        return PluginReport(metrics={"x": 1.0}, acted=True, message="hello", stop="enough")


def test_regularisers_collect_terms_reports_messages_and_stop() -> None:
    h = Harness(("entropy_bonus", {"coef": 0.03}), extra=(("twice", Twice("twice", None, None)),))
    out = loss_out(tiny_policy())
    assert [t.name for t in h.regs.loss_terms(out, None)] == ["entropy_bonus", "twice_a", "twice_b"]
    end = h.regs.step_end({"budget/entropy_bonus/raw": -1.5}, 3)
    assert end.metrics["plugin/entropy_bonus/entropy"] == 1.5
    assert end.metrics["plugin/twice/x"] == 1.0 and end.metrics["plugin/twice/acted"] == 1.0
    assert end.messages == ["plugin twice: hello"]
    assert end.stop == "plugin twice stopped training: enough"
    assert h.regs.names == ["entropy_bonus", "twice"] and not h.regs.needs_reference


@pytest.mark.parametrize(
    "term, match",
    [
        ("not a term", "must return LossTerm objects, got str"),
        (
            LossTerm("objective", 1.0, torch.tensor(0.0)),
            "loss term 'objective' already exists \\(from the loss module\\)",
        ),
    ],
)
def test_regularisers_check_the_terms(term: Any, match: str) -> None:
    class Bad(Regulariser):
        def loss_terms(self, out, batch):
            return term

    h = Harness(extra=(("bad", Bad("bad", None, None)),))
    with pytest.raises(
        PluginError, match="plugin 'bad' failed in hook chessrl_loss_terms: .*" + match
    ):
        h.regs.loss_terms(None, None)


def test_regularisers_state_and_reference() -> None:
    h = Harness(("kl_penalty", {"reference": "initial"}), ("entropy_floor", {"action": "warn"}))
    assert h.regs.needs_reference
    h.plugins["entropy_floor"].times_fired = 4
    states = h.regs.state_dict()
    assert states == {"kl_penalty": {}, "entropy_floor": {"consecutive_low": 0, "times_fired": 4}}
    resumed = Harness(("kl_penalty", {}), ("entropy_floor", {"action": "warn"}))
    resumed.regs.load_state_dict(states)
    assert resumed.plugins["entropy_floor"].times_fired == 4


def test_every_builtin_declares_its_lines() -> None:
    """Controllers and monitors declare their bounds, targets and floors (health and the report
    read them, never option names); fixed terms have no line to declare."""
    h = Harness(
        ("entropy_bonus", {"coef": 0.01}),
        ("kl_penalty", {"coef": 0.01}),
        ("adaptive_kl", {"target": 0.02, "min": 1e-4, "max": 0.5}),
        ("entropy_floor", {"floor": 0.7, "max_coef": 0.2}),
    )
    h.train_start()
    end = h.regs.step_end({**kl_metrics(0.01), **ent(2.0)}, 1)
    declared = {k: v for k, v in end.metrics.items() if "@" in k}
    assert declared == {
        "plugin/adaptive_kl/coef@min": 1e-4,
        "plugin/adaptive_kl/coef@max": 0.5,
        "plugin/adaptive_kl/kl@target": 0.02,
        "plugin/entropy_floor/train/entropy@floor": 0.7,
        "plugin/entropy_floor/coef@max": 0.2,
    }
