"""Every metrics key chessrl logs, spelled once (docs/metrics.md defines each one).

Fixed keys are constants (``K.TRAIN_ENTROPY == "train/entropy"``); keys with a name in them
have a helper (``K.plugin_key("adaptive_kl", "coef") == "plugin/adaptive_kl/coef"``). Use
them as ``from chessrl import keys as K``. :func:`chessrl.metrics.row` checks a row against
this vocabulary; tests/test_docs.py checks it against docs/metrics.md.
"""

from __future__ import annotations

NAMESPACES = ("train/", "budget/", "plugin/", "eval/", "rollout/", "time/")
STEP = "step"

# --- train/: the optimisation -------------------------------------------------------------
TRAIN_LOSS = "train/loss"
TRAIN_LOSS_OBJECTIVE = "train/loss_objective"
TRAIN_CLIP_FRACTION = "train/clip_fraction"
TRAIN_RATIO_MEAN = "train/ratio_mean"
TRAIN_RATIO_MAX = "train/ratio_max"
TRAIN_RATIO_MIN = "train/ratio_min"
TRAIN_RATIO_FIRST_EPOCH = "train/ratio_first_epoch"
TRAIN_RATIO_FIRST_EPOCH_MAXDEV = "train/ratio_first_epoch_maxdev"
TRAIN_ESS = "train/ess"
TRAIN_ENTROPY = "train/entropy"
TRAIN_ENTROPY_SAMPLE = "train/entropy_sample"
TRAIN_KL_OLD_EXACT = "train/kl_old_exact"
TRAIN_KL_OLD_K1 = "train/kl_old_k1"
TRAIN_KL_OLD_K3 = "train/kl_old_k3"
TRAIN_KL_REF_EXACT = "train/kl_ref_exact"
TRAIN_KL_REF_K1 = "train/kl_ref_k1"
TRAIN_KL_REF_K3 = "train/kl_ref_k3"
TRAIN_GRAD_NORM = "train/grad_norm"
TRAIN_LR = "train/lr"
TRAIN_PPO_EPOCHS_RUN = "train/ppo_epochs_run"
TRAIN_SKIPPED_STEPS = "train/skipped_steps"
TRAIN_TRAINED_PLIES = "train/trained_plies"
TRAIN_OLD_POLICY_AGE = "train/old_policy_age"
TRAIN_KL_PREFIX = "train/kl_"  # every KL key starts with it (the report's KL plot)
TRAIN_KL_OLD_PREFIX = "train/kl_old"  # the KL to the old policy, any estimator

# --- rollout/: the sampled games ----------------------------------------------------------
ROLLOUT_REWARD_MEAN = "rollout/reward_mean"
ROLLOUT_RETURN_MEAN = "rollout/return_mean"
ROLLOUT_RETURN_STD = "rollout/return_std"
ROLLOUT_RETURN_BEST = "rollout/return_best"
ROLLOUT_RETURN_P90 = "rollout/return_p90"
ROLLOUT_ZERO_STD_GROUPS = "rollout/zero_std_groups"
ROLLOUT_ZERO_STD_FRAC = "rollout/zero_std_frac"
ROLLOUT_TRAINED_PLIES = "rollout/trained_plies"
ROLLOUT_GAME_LEN_MEAN = "rollout/game_len_mean"
ROLLOUT_TERMINATED_FRAC = "rollout/terminated_frac"
ROLLOUT_TEACHER_FORCED_FRAC = "rollout/teacher_forced_frac"
ROLLOUT_LOGPROB_DRIFT = "rollout/logprob_drift"
ROLLOUT_REWARD_SEARCHES = "rollout/reward_searches"
ROLLOUT_REWARD_CACHE_HIT_RATE = "rollout/reward_cache_hit_rate"
ROLLOUT_ENGINE_RESTARTS = "rollout/engine_restarts"
ROLLOUT_EXPERT_PLIES = "rollout/expert_plies"
ROLLOUT_EXPERT_ADVANTAGE = "rollout/expert_advantage"

# --- time/: where the step's time went (seconds) ------------------------------------------
TIME_STEP = "time/step"
TIME_ROLLOUT = "time/rollout"
TIME_REWARD_ENGINE = "time/reward_engine"
TIME_POLICY = "time/policy"
TIME_LEARNER = "time/learner"
TIME_BUDGET = "time/budget"
TIME_EVAL = "time/eval"
TIME_OVERHEAD_FRAC = "time/overhead_frac"

FIXED = tuple(
    v
    for k, v in dict(globals()).items()
    if k.startswith(("TRAIN_", "ROLLOUT_", "TIME_")) and not k.endswith("_PREFIX")
)

# --- budget/<term>/<metric>: the loss budget -----------------------------------------------
OBJECTIVE = "objective"  # the PPO-clip term; every other term is named after its plugin
BUDGET_METRICS = ("value", "raw", "coef", "value_share", "grad_norm", "grad_share", "cos_objective")


def budget_key(term: str, metric: str) -> str:
    """``budget/<term>/<metric>``; ``metric`` is one of :data:`BUDGET_METRICS`."""
    if metric not in BUDGET_METRICS:
        raise ValueError(f"budget metric must be one of {BUDGET_METRICS}; got {metric!r}")
    return f"budget/{term}/{metric}"


def budget_term(key: str) -> str | None:
    """The term of a ``budget/<term>/<metric>`` key, else None."""
    parts = key.split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "budget" else None


# --- plugin/<name>/<key>: what regulariser plugins report ---------------------------------
ACTED = "acted"  # plugin/<name>/acted: 1 when the plugin acted this step
AT_BOUND = "at_bound"  # plugin/<name>/at_bound: 1 when its coefficient sits at a bound
COEF = "coef"  # plugin/<name>/coef: the coefficient a controller sets
FLAGS = (ACTED, AT_BOUND)
DECLARED_KINDS = ("min", "max", "target", "floor")


def plugin_key(plugin: str, key: str) -> str:
    """``plugin/<plugin>/<key>``: a metric ``plugin`` reports (``coef``, ``acted``, ...)."""
    return f"plugin/{plugin}/{key}"


def plugin_of(key: str) -> str | None:
    """The plugin of a ``plugin/<name>/...`` key, else None."""
    parts = key.split("/", 2)
    return parts[1] if len(parts) == 3 and parts[0] == "plugin" and parts[1] else None


def declared_key(plugin: str, key: str, kind: str) -> str:
    """The metrics key under which ``plugin`` logs a ``kind`` line ("min", "max", "target",
    "floor") for ``key`` (one of its own metrics, or with a slash any metrics key)."""
    if kind not in DECLARED_KINDS:
        raise ValueError(f"kind must be one of {DECLARED_KINDS}; got {kind!r}")
    return f"plugin/{plugin}/{key}@{kind}"


def parse_declared(metric: str) -> tuple[str, str, str] | None:
    """``(plugin, full metrics key it refers to, kind)`` of a declared-line key, or None."""
    if not metric.startswith("plugin/") or "@" not in metric:
        return None
    head, kind = metric.rsplit("@", 1)
    parts = head.split("/", 2)
    if kind not in DECLARED_KINDS or len(parts) < 3 or not parts[1] or not parts[2]:
        return None
    plugin, key = parts[1], parts[2]
    return plugin, key if "/" in key else plugin_key(plugin, key), kind


# --- eval/: evaluation matches and benchmarks ---------------------------------------------
EVAL_PREFIX = "eval/"
MATCH_METRICS = (
    "score",
    "score_lo",
    "score_hi",
    "non_losing",
    "non_losing_lo",
    "non_losing_hi",
    "games",
    "wins",
    "draws",
    "losses",
)


def eval_key(opponent: str, metric: str) -> str:
    """``eval/<opponent>/<metric>`` (a match) or ``eval/<set>/<metric>`` (a benchmark)."""
    return f"eval/{opponent}/{metric}"


def eval_series_key(name: str) -> str:
    """The metrics key of an evaluation series: an opponent's ``eval/<name>/score``, or a
    benchmark proportion's ``eval/<set>/<metric>`` (a name with a slash)."""
    return f"eval/{name}" if "/" in name else eval_key(name, "score")


def check(key: str) -> str | None:
    """Why ``key`` is not in the documented vocabulary, or None when it is."""
    if key == STEP:
        return None
    if not key.startswith(NAMESPACES):
        return f"metric key {key!r} is outside the documented namespaces {NAMESPACES}"
    if key.startswith(("train/", "rollout/", "time/")) and key not in FIXED:
        return f"metric key {key!r} is not defined in docs/metrics.md (chessrl.keys)"
    if key.startswith("budget/") and (
        budget_term(key) is None or key.split("/")[2] not in BUDGET_METRICS
    ):
        return f"metric key {key!r} is not budget/<term>/<one of {', '.join(BUDGET_METRICS)}>"
    if key.startswith("plugin/") and plugin_of(key) is None:
        return f"metric key {key!r} is not plugin/<name>/<key>"
    return None
