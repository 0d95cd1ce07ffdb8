"""The experiment config: a typed schema, strict TOML loading, ``--set`` overrides.

``[env]`` keys other than ``name`` are validated by the chosen game's own schema and
``[plugins.<name>]`` sections by that regulariser's ``Config``; both come from plugins.
The help text beside each field is what ``docs/config.md`` and ``chessrl config show`` show.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import tomli_w

from chessrl import pluginmanager
from chessrl.errors import UserError
from chessrl.schema import Locator, build, opt, section, suggest, table, to_dict

T = TypeVar("T")


@dataclass
class EnvConfig:
    name: str = opt(
        "chess", "Game to play: any game registered by an installed plugin (`chessrl plugins`)."
    )
    options: Any = None  # the game's own options dataclass, filled from the other [env] keys


@dataclass
class PolicyConfig:
    d_model: int = opt(256, "Transformer width.", ge=8)
    n_layers: int = opt(4, "Transformer layers.", ge=1)
    n_heads: int = opt(8, "Attention heads; must divide d_model.", ge=1)
    d_ff: int = opt(1024, "Feed-forward hidden size.", ge=8)
    head_dim: int = opt(
        16, "Per-token features the action layer reads besides the CLS token (0 = CLS only).", ge=0
    )
    head: str = opt(
        "linear",
        "Action head: 'linear' (a logit row per action) or 'pairs' (an "
        "action scored from the two tokens it connects, e.g. a move's from- and "
        "to-square; the game must declare action_structure).",
        choices=("linear", "pairs"),
    )
    pair_dim: int = opt(64, "Query/key features of the 'pairs' head.", ge=1)
    frozen_layers: int = opt(
        0, "Freeze the embeddings and the first k layers (0 = train everything).", ge=0
    )
    init_checkpoint: str = opt("", "Checkpoint to load policy weights from ('' = random init).")
    bf16: bool = opt(
        True,
        "bf16 autocast for the policy's math on CUDA (log-probs stay float32); ignored on CPU.",
    )
    cpu_bf16: bool = opt(
        False,
        "bf16 autocast for the policy's math on a CPU with native bf16 matrix instructions "
        "(AMX or AVX512-BF16: ~2x faster forwards and backwards; log-probs stay float32); "
        "ignored on other CPUs (the run says so). Off by default: bf16 kernels round a row "
        "differently in batches of different sizes, so rollout/logprob_drift may be ~1e-4 "
        "instead of 0 (the first epoch's ratio stays exactly 1).",
    )

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads = {self.n_heads} must divide d_model = {self.d_model}")
        if self.frozen_layers > self.n_layers:
            raise ValueError(
                f"frozen_layers = {self.frozen_layers} exceeds n_layers = {self.n_layers}"
            )


@dataclass
class RolloutConfig:
    roots: int = opt(4, "R: root positions per step.", ge=1)
    group_size: int = opt(16, "G: trajectories per root (the GRPO group).", ge=1)
    plies: int = opt(16, "T: plies per trajectory (the trajectory depth).", ge=1)
    temperature: float = opt(1.0, "Sampling temperature; the loss uses the same one.", gt=0.0)
    opponent: str = opt(
        "self",
        "'self': the policy plays both sides; 'engine': the game's engine answers.",
        choices=("self", "engine"),
    )
    train_plies: str = opt(
        "root",
        "Which plies are trained on: the root player's ('root') or both sides' ('both').",
        choices=("root", "both"),
    )
    teacher_forcing_prob: float = opt(
        0.0,
        "Probability, per trajectory, that the first opponent plies are the engine's.",
        ge=0.0,
        le=1.0,
    )
    teacher_forcing_depth: int = opt(
        4, "How many opponent plies a teacher-forced trajectory takes from the engine.", ge=0
    )
    expert_members: int = opt(
        0,
        "Group members per root whose first move is the game engine's, "
        "trained like sampled ones (guided GRPO: every group holds the "
        "engine's choice; 0 = on-policy only).",
        ge=0,
    )


@dataclass
class AdvantageConfig:
    scale: str = opt(
        "std",
        "Divide group-centred returns by the group std ('std') or not ('none', Dr. GRPO), or "
        "use each member's mean pairwise comparison with the others ('rank': only the order "
        "of the returns counts).",
        choices=("std", "none", "rank"),
    )
    returns: str = opt(
        "sum",
        "Return: the sum of the player's per-ply rewards ('sum') or the final value ('terminal').",
        choices=("sum", "terminal"),
    )
    eps: float = opt(1e-6, "Added to the group std before dividing.", gt=0.0)


@dataclass
class LossConfig:
    clip_low: float = opt(0.2, "PPO clip epsilon below 1 (ratio >= 1 - clip_low).", ge=0.0, lt=1.0)
    clip_high: float = opt(0.2, "PPO clip epsilon above 1 (ratio <= 1 + clip_high).", ge=0.0)
    aggregation: str = opt(
        "token-mean",
        "'token-mean': mean over all trained plies; "
        "'seq-mean': mean per trajectory, then over trajectories.",
        choices=("token-mean", "seq-mean"),
    )


@dataclass
class TrainerConfig:
    steps: int = opt(100, "GRPO steps to run.", ge=0)
    lr: float = opt(1e-6, "AdamW learning rate.", gt=0.0)
    lr_schedule: str = opt(
        "constant",
        "Learning rate over the run: 'constant' (lr at every step) or 'cosine' (from lr at "
        "step 1 down to lr * lr_final at step trainer.steps, half a cosine; set on the "
        "optimiser before every step).",
        choices=("constant", "cosine"),
    )
    lr_final: float = opt(
        0.1,
        "With lr_schedule = 'cosine': the last step's rate as a fraction of lr.",
        ge=0.0,
        le=1.0,
    )
    weight_decay: float = opt(0.0, "AdamW weight decay.", ge=0.0)
    betas: list[float] = opt([0.9, 0.999], "AdamW betas (beta1, beta2).", ge=0.0, lt=1.0, length=2)
    grad_clip: float = opt(1.0, "Clip the global gradient norm to this (0 = off).", ge=0.0)
    ppo_steps: int = opt(1, "Optimisation epochs over each rollout.", ge=1)
    sync_every: int = opt(1, "Copy the policy into the old policy every N steps.", ge=1)
    checkpoint_every: int = opt(50, "Write a checkpoint every N steps (and at the end).", ge=1)
    keep_checkpoints: int = opt(3, "How many recent checkpoints to keep.", ge=1)
    budget_every: int = opt(1, "Measure per-term gradient norms every N steps (0 = never).", ge=0)
    eval_every: int = opt(
        0, "Evaluate against the game's opponent every N steps (0 = never).", ge=0
    )
    eval_games: int = opt(16, "Games per evaluation.", ge=1)
    eval_initial: bool = opt(
        True,
        "With eval_every > 0, also evaluate the initial policy at "
        "step 0, before any update: the baseline the report's learning "
        "verdict compares the last evaluation with.",
    )
    health_window: int = opt(20, "Steps in the window health flags look at.", ge=2)
    max_consecutive_skips: int = opt(
        5,
        "Stop the run (exit 1) after this many consecutive "
        "skipped steps: steps whose loss, gradient, updated "
        "parameters or logits were not finite (0 = never stop).",
        ge=0,
    )


@dataclass
class LoggingConfig:
    wandb: str = opt(
        "auto",
        "'auto' (offline unless an API key is configured), 'offline', "
        "'online' or 'disabled'; WANDB_MODE in the environment wins over it.",
        choices=("auto", "offline", "online", "disabled"),
    )
    project: str = opt("chessrl", "wandb project (WANDB_PROJECT wins when set).")
    entity: str = opt(
        "", "wandb entity, a user or team ('' = wandb's default; WANDB_ENTITY wins when set)."
    )
    group: str = opt(
        "", "wandb run group, e.g. a sweep's name ('' = none; WANDB_RUN_GROUP wins when set)."
    )
    tags: list[str] = opt([], "wandb tags of the run (WANDB_TAGS, comma-separated, wins when set).")
    wandb_report: bool = opt(
        True,
        "When the run ends with wandb on: write the run's report "
        "(chessrl report) and upload it as a 'report' artifact.",
    )
    wandb_checkpoint: bool = opt(
        False,
        "When the run ends with wandb on: upload the latest checkpoint as a 'model' artifact.",
    )
    progress: bool = opt(True, "Show a progress bar.")


@dataclass
class Config:
    name: str = opt("run", "Run name; the run directory is runs/<name>-<timestamp>/.")
    seed: int = opt(0, "Seed for the policy init, root sampling and sampling.", ge=0, le=2**63 - 1)
    device: str = opt(
        "cpu", "'cpu', 'cuda' or 'auto' (cuda when present).", choices=("cpu", "cuda", "auto")
    )
    env: EnvConfig = section(EnvConfig, "The game.")
    policy: PolicyConfig = section(PolicyConfig, "The policy network.")
    rollout: RolloutConfig = section(RolloutConfig, "Group rollouts.")
    advantage: AdvantageConfig = section(AdvantageConfig, "Group-relative advantages.")
    loss: LossConfig = section(LossConfig, "The GRPO (PPO-clip) objective.")
    trainer: TrainerConfig = section(TrainerConfig, "Optimisation and checkpoints.")
    logging: LoggingConfig = section(LoggingConfig, "metrics.jsonl and wandb.")
    plugins: dict = dataclasses.field(
        default_factory=dict,
        metadata={
            "help": "Enabled regularisers: one [plugins.<name>] table each, "
            "validated by the plugin."
        },
    )


def read_toml(path: str | Path, example: str = "examples/clean.toml") -> tuple[dict, str]:
    """Parse a TOML file or raise a one-line UserError (``example``: a file to suggest)."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; give the path of a TOML, e.g. {example}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the file ({exc.__class__.__name__}: {exc})") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML: {exc}") from None


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal (1, 0.5, true, "x", [1,2]) or else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(
    data: dict, overrides: list[str], applied: dict[str, str] | None = None
) -> dict:
    """Apply ``--set`` items to ``data`` (in place, also returned); ``applied``, when given,
    receives ``{dotted key: the --set item}`` so that errors can blame the item, not the file."""
    applied = {} if applied is None else applied
    for item in overrides:
        if "=" not in item:
            raise UserError(
                f"--set {item!r}: expected section.key=value, e.g. --set trainer.lr=3e-6"
            )
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {item!r}: '{part}' is not a section")
        node[parts[-1]] = parse_value(value.strip())
        applied[".".join(parts)] = item
    return data


def load_toml(
    path: str | Path,
    overrides: Sequence[str],
    from_dict: Callable[[dict, Locator], T],
    example: str = "examples/clean.toml",
) -> T:
    """Read the TOML file ``path``, apply the ``--set`` items and build a config with
    ``from_dict`` (:func:`from_dict` for an experiment, or another command's own builder).
    Every mistake is one :class:`UserError` line naming the file and line, or the item;
    ``example`` is the file a missing one's line suggests."""
    data, text = read_toml(path, example)
    applied: dict[str, str] = {}
    data = apply_overrides(data, list(overrides), applied)
    return from_dict(data, Locator(str(path), text, overrides=applied))


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Load, override and validate an experiment config. Raises UserError on any mistake."""
    return load_toml(path, overrides, from_dict)


def from_dict(data: dict, loc: Locator | None = None) -> Config:
    loc = loc or Locator()
    env = table(data, "env", loc)
    plugins = table(data, "plugins", loc, "a table of [plugins.<name>] sections")
    core = {k: v for k, v in data.items() if k not in ("env", "plugins")}
    if "output" in core and {"data", "labels", "train", "cache_dir"} & set(core):
        raise UserError(
            f"{loc.where('output')}a pretraining config (output, data, labels, ...), not an "
            "experiment: run it with chessrl pretrain"
        )
    cfg = build(Config, core, loc=loc)
    cfg.env = build(EnvConfig, {k: v for k, v in env.items() if k == "name"}, prefix="env", loc=loc)

    games = pluginmanager.games()
    if cfg.env.name not in games:
        pluginmanager.check_not_broken(cfg.env.name, loc.where("env.name"))
        raise UserError(
            f"{loc.where('env.name')}'env.name' = {cfg.env.name!r} is not an "
            f"installed game{suggest(cfg.env.name, games)} "
            f"(installed: {', '.join(sorted(games)) or 'none'})"
            f"{pluginmanager.missing_hint(cfg.env.name)}"
        )
    game_schema = games[cfg.env.name].schema
    cfg.env.options = build(game_schema, env, prefix="env", loc=loc, extra=("name",))

    regs = pluginmanager.regularisers()
    enabled = {}
    for name in plugins:
        if name not in regs:
            pluginmanager.check_not_broken(name, loc.where("plugins." + name))
            raise UserError(
                f"{loc.where('plugins.' + name)}plugin '{name}' is not installed"
                f"{suggest(name, regs)} (installed regularisers: "
                f"{', '.join(sorted(regs)) or 'none'})"
                f"{pluginmanager.missing_hint(name)}"
            )
        section_data = table(plugins, name, loc, prefix="plugins")
        enabled[name] = build(
            regs[name].obj.Config, section_data, prefix=f"plugins.{name}", loc=loc
        )
    cfg.plugins = enabled
    return cfg


def config_to_dict(cfg: Config) -> dict:
    d = to_dict(cfg)
    env = {"name": cfg.env.name, **to_dict(cfg.env.options)}
    d["env"] = env
    d["plugins"] = {k: to_dict(v) for k, v in cfg.plugins.items()}
    return d


def dumps_toml(d: dict) -> str:
    """A resolved config dict as TOML, written by tomli-w.

    TOML has no null: an unset optional key (``None``) is left out, so reading the file back
    gives the key its default, None, again."""
    return tomli_w.dumps(_without_none(d))


def _without_none(d: dict) -> dict:
    return {
        k: _without_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None
    }
