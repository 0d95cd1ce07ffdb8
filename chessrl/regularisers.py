"""What regulariser plugins share with the core: the typed :class:`Regulariser`, the run's
ordered :class:`Regularisers`, loss terms, named coefficients, reports and the run's view.

A regulariser is a class registered by ``chessrl_register_regularisers``. For each enabled
``[plugins.<name>]`` section, in TOML order, the run builds ``cls(name, config, coefs)``; the
instances form one :class:`Regularisers`, which registers them with a per-run pluggy manager
and calls the run hooks through pluggy. A :class:`Regulariser` subclass overrides typed
methods (``loss_terms``, ``adjust_coefficients``, ``report``, ...); the base class implements
the ``chessrl_*`` hooks by calling them, and a subclass may still implement a hook itself with
``@hookimpl`` (pluggy calls whatever the instance defines). See docs/plugins.md.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

from chessrl import keys as K
from chessrl import pluginmanager
from chessrl.errors import PluginError, UserError
from chessrl.hookspecs import hookimpl
from chessrl.keys import declared_key

if TYPE_CHECKING:  # torch is imported by the code that runs a step; the CLI starts without it
    import torch
    from tensordict import TensorDict

    from chessrl.config import Config
    from chessrl.game import Game


@dataclass
class LossTerm:
    """A named loss term: the trainer adds ``coef * raw`` to the loss as ``loss_<name>``.

    ``raw`` is a differentiable scalar without the coefficient, so the budget can tell the
    coefficient's part from the raw value's. Sign convention: the term is *minimised*, so a
    bonus (entropy) uses ``raw = -entropy``.
    """

    name: str
    coef: float
    raw: torch.Tensor


@dataclass
class PluginReport:
    """What a plugin says at the end of a step.

    ``metrics`` are logged as ``plugin/<name>/<key>``. ``acted`` says whether the plugin did
    anything this step (a controller changed its coefficient, a monitor fired); None for
    plugins that act every step by construction (a fixed loss term). ``at_bound`` is True
    when a controlled coefficient sits at its min or max.

    ``bounds``, ``targets`` and ``floors`` declare the reference lines of a metric: its
    ``(min, max)`` (None for an open side), the value it is steered towards, the value it
    should stay above. A key without a slash is one of ``metrics`` (``"coef"``), a key with one
    any metrics key (``"train/entropy"``). They are logged as ``plugin/<name>/<key>@min``
    (``@max``, ``@target``, ``@floor``); the health messages and the report's plots take
    bounds, targets and floors from there alone, for any plugin (docs/plugins.md).
    """

    metrics: dict[str, float] = field(default_factory=dict)
    acted: bool | None = None
    at_bound: bool | None = None
    stop: str | None = None  # a reason to stop training (an entropy floor in 'stop' mode)
    message: str | None = None  # one line the trainer prints (a monitor's warning)
    bounds: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=dict)
    floors: dict[str, float] = field(default_factory=dict)

    def declared_metrics(self, name: str) -> dict[str, float]:
        """The declared lines as ``plugin/<name>/<key>@<kind>`` metrics (non-finite sides left
        out)."""
        lines: list[tuple[str, str, Any]] = []
        for key, pair in self.bounds.items():
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise TypeError(
                    f"plugin {name}: bounds['{key}'] must be a (min, max) pair, got {pair!r}"
                )
            lines += [(key, "min", pair[0]), (key, "max", pair[1])]
        lines += [(k, "target", v) for k, v in self.targets.items()]
        lines += [(k, "floor", v) for k, v in self.floors.items()]
        out = {}
        for key, kind, value in lines:
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(
                    f"plugin {name}: the {kind} of '{key}' must be a number, got {value!r}"
                )
            if math.isfinite(value):
                out[declared_key(name, key, kind)] = float(value)
        return out


@dataclass
class Coefficient:
    name: str
    value: float
    min: float
    max: float
    owner: str
    # (by, before, after) of every change this step
    history: list[tuple[str, float, float]] = field(default_factory=list)

    def at_bound(self) -> bool:
        return math.isclose(self.value, self.min, rel_tol=1e-9, abs_tol=1e-12) or math.isclose(
            self.value, self.max, rel_tol=1e-9, abs_tol=1e-12
        )


class Coefficients:
    """Named, bounded coefficients shared by the plugins of one run.

    A term plugin *declares* the coefficient it multiplies; controller plugins *set* it. When
    two controllers act on one coefficient they run in the order of their ``[plugins.*]``
    sections and each sees the value the previous one left; every change is clamped to the
    declared bounds and recorded with the plugin that made it.
    """

    def __init__(self) -> None:
        self._c: dict[str, Coefficient] = {}

    def declare(
        self, name: str, value: float, *, owner: str, min: float = 0.0, max: float = math.inf
    ) -> None:
        if name in self._c:
            raise UserError(
                f"plugins '{self._c[name].owner}' and '{owner}' both declare "
                f"coefficient '{name}'; enable only one of them"
            )
        if not (min <= value <= max):
            raise UserError(
                f"plugins.{owner}: coefficient '{name}' = {value} is outside its "
                f"bounds [{min}, {max}]"
            )
        self._c[name] = Coefficient(name, float(value), float(min), float(max), owner)

    def __contains__(self, name: str) -> bool:
        return name in self._c

    def __getitem__(self, name: str) -> Coefficient:
        try:
            return self._c[name]
        except KeyError:
            raise UserError(
                f"no enabled plugin declares coefficient '{name}' (declared: "
                f"{', '.join(self._c) or 'none'})"
            ) from None

    def get(self, name: str) -> float:
        return self[name].value

    def set(
        self, name: str, value: float, *, by: str, min: float = -math.inf, max: float = math.inf
    ) -> float:
        """Set ``name`` to ``value`` clamped to the declared bounds and to ``[min, max]``."""
        c = self[name]
        lo, hi = builtins_max(c.min, min), builtins_min(c.max, max)
        new = float(builtins_min(builtins_max(value, lo), hi))
        if new != c.value:
            c.history.append((by, c.value, new))
        c.value = new
        return new

    def names(self) -> list[str]:
        return list(self._c)

    def begin_step(self) -> None:
        for c in self._c.values():
            c.history.clear()

    def state_dict(self) -> dict[str, float]:
        return {n: c.value for n, c in self._c.items()}

    def load_state_dict(self, state: dict[str, float]) -> None:
        for n, v in state.items():
            if n in self._c:
                self._c[n].value = float(v)


builtins_min, builtins_max = min, max


def require_coefficient(coefs: Coefficients, name: str, plugin: str, hint: str) -> None:
    """Fail before training when a controller's coefficient has no owner (a misconfiguration)."""
    if name not in coefs:
        raise UserError(
            f"plugins.{plugin}: adjusts coefficient '{name}', which no enabled "
            f"plugin declares; {hint}"
        )


def metric_value(metrics: Mapping[str, Any], key: str, plugin: str) -> float:
    """``metrics[key]`` as a float, or a UserError naming the plugin and the available keys."""
    if key not in metrics:
        raise UserError(
            f"plugins.{plugin}: metric '{key}' is not logged in this run; "
            f"set plugins.{plugin}.metric to one of: {', '.join(sorted(metrics))}"
        )
    return float(metrics[key])


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ``mask``; 0 (not NaN) when the mask is empty."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


@dataclass
class NoOptions:
    """A regulariser without options."""


@dataclass(frozen=True)
class RunView:
    """What a regulariser sees of the run, in ``chessrl_train_start`` / ``chessrl_train_end``.

    ``policy`` is the trained module: read its parameters (an anchor, a norm), never step or
    replace it. ``step`` is the step training starts from (0, or the checkpoint's on resume)
    or, at train end, the last step done. ``log(line)`` prints a line and writes it to
    train.log.

    Plugins written when train_start received the trainer's whole run may still read its other
    fields (``run.optimizer``, ...): they are forwarded, with a ``DeprecationWarning``, from
    the run the view was made of (``full``; not part of the view's interface).
    """

    config: Config
    run_dir: Path | None
    game: Game
    policy: torch.nn.Module
    coefs: Coefficients
    device: torch.device | str = "cpu"
    step: int = 0
    log: Callable[[str], None] = print
    full: Any = field(default=None, repr=False, compare=False)

    def __getattr__(self, name: str) -> Any:
        try:
            full = object.__getattribute__(self, "full")
        except AttributeError:
            full = None
        if full is None or name.startswith("__"):
            raise AttributeError(f"'RunView' object has no attribute '{name}'")
        warnings.warn(
            f"run.{name} is not part of the plugins' view of a run (RunView: config, "
            f"run_dir, game, policy, coefs, device, step, log); it will go",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(full, name)


class Regulariser:
    """The base class (and the typed protocol) of a regulariser.

    Subclasses set ``Config`` (a dataclass built with :func:`chessrl.schema.opt`) and override
    the methods below that they need; every default does nothing. ``needs_reference = True``
    (on the class or the instance) asks the trainer for ``kl_ref_*``. The ``chessrl_*`` hook
    implementations at the end call these methods; pluggy calls them.
    """

    Config: ClassVar[type] = NoOptions
    needs_reference: bool = False

    def __init__(self, name: str, config: Any, coefs: Coefficients) -> None:
        self.name, self.config, self.coefs = name, config, coefs

    # --- the typed interface ----------------------------------------------------------

    def train_start(self, run: RunView) -> None:
        """Once before the first step (and on resume, after :meth:`load_state_dict`): check the
        configuration (every coefficient is declared by now), acquire what the plugin needs."""

    def loss_terms(self, out: TensorDict, batch: TensorDict) -> LossTerm | list[LossTerm] | None:
        """This epoch's term(s), computed from the loss output ``out`` (read the coefficient
        from ``self.coefs`` every time: a controller may change it)."""
        return None

    def adjust_coefficients(self, metrics: Mapping[str, float], step: int) -> None:
        """After the optimiser step: set coefficients (``self.coefs.set``) from this step's
        metrics; the new values apply from the next step."""

    def report(self, metrics: Mapping[str, float], step: int) -> PluginReport | None:
        """This step's :class:`PluginReport`: metrics, acted, at_bound, declared lines, a
        message or a stop request (None: nothing to report)."""
        return None

    def eval_end(self, metrics: Mapping[str, float], step: int) -> None:
        """After an evaluation, with its ``eval/...`` metrics."""

    def train_end(self, run: RunView) -> None:
        """Once when training stops, normally or not: release what :meth:`train_start` took."""

    def state_dict(self) -> dict:
        """This plugin's checkpoint state (override for stateful plugins)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""

    # --- the hooks, through which pluggy calls the methods above ------------------------

    @hookimpl
    def chessrl_train_start(self, run: RunView) -> None:
        self.train_start(run)

    @hookimpl
    def chessrl_loss_terms(
        self, out: TensorDict, batch: TensorDict
    ) -> LossTerm | list[LossTerm] | None:
        return self.loss_terms(out, batch)

    @hookimpl
    def chessrl_adjust_coefficients(self, metrics: Mapping[str, float], step: int) -> None:
        self.adjust_coefficients(metrics, step)

    @hookimpl
    def chessrl_step_end(self, metrics: Mapping[str, float], step: int) -> PluginReport | None:
        return self.report(metrics, step)

    @hookimpl
    def chessrl_eval_end(self, metrics: Mapping[str, float], step: int) -> None:
        self.eval_end(metrics, step)

    @hookimpl
    def chessrl_train_end(self, run: RunView) -> None:
        self.train_end(run)

    @hookimpl
    def chessrl_state_dict(self) -> dict[str, dict]:
        return {self.name: self.state_dict()}

    @hookimpl
    def chessrl_load_state_dict(self, states: Mapping[str, dict]) -> None:
        if self.name in states:
            self.load_state_dict(states[self.name])


def report_metrics(name: str, report: PluginReport) -> dict[str, float]:
    """A report as metrics: ``plugin/<name>/<key>``, ``acted``, ``at_bound`` (1/0) and the
    declared lines (``plugin/<name>/<key>@min`` ...)."""
    if not isinstance(report, PluginReport):
        raise PluginError(
            name,
            "chessrl_step_end",
            TypeError(f"must return a PluginReport, got {type(report).__name__}"),
        )
    why = _bad_report(report)
    if why:
        raise PluginError(name, "chessrl_step_end", TypeError(why))
    out = {K.plugin_key(name, k): float(v) for k, v in report.metrics.items()}
    if report.acted is not None:
        out[K.plugin_key(name, K.ACTED)] = float(bool(report.acted))
    if report.at_bound is not None:
        out[K.plugin_key(name, K.AT_BOUND)] = float(bool(report.at_bound))
    out.update(report.declared_metrics(name))
    return out


_NAME = re.compile(r"[^/@\s]+")  # a metric or term name: it becomes a part of a key


def _bad_term(term: LossTerm, out: Any) -> str:
    """Why a plugin's LossTerm cannot be added to the loss ("" when it can). A non-finite
    ``coef`` or ``raw`` is no mistake here: the trainer's divergence checks skip that step."""
    import torch  # the run has imported it; chessrl's start does not

    name = term.name
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return f"loss term name {name!r}: a non-empty name without '/', '@' or spaces"
    coef = term.coef
    try:
        if isinstance(coef, (str, bytes)):
            raise TypeError
        float(coef)
    except (TypeError, ValueError, RuntimeError):
        return f"loss term '{name}': coef {str(coef)[:40]!r} is not a number"
    raw = term.raw
    if not torch.is_tensor(raw) or raw.numel() != 1 or not raw.is_floating_point():
        what = (
            f"a tensor of shape {tuple(raw.shape)}" if torch.is_tensor(raw) else type(raw).__name__
        )
        return f"loss term '{name}': raw must be a floating scalar tensor, got {what}"
    ref = out.get("loss_objective", None) if hasattr(out, "get") else None
    if ref is not None and raw.device != ref.device:
        return f"loss term '{name}': raw is on {raw.device}, the loss on {ref.device}"
    return ""


def _bad_report(report: PluginReport) -> str:
    """Why a plugin's report cannot be logged ("" when it can)."""
    for key, value in report.metrics.items():
        if not isinstance(key, str) or not _NAME.fullmatch(key) or key in K.FLAGS:
            return (
                f"metric key {key!r}: a non-empty name without '/', '@' or spaces "
                f"({', '.join(sorted(K.FLAGS))} are PluginReport fields)"
            )
        if isinstance(value, (str, bytes)) or value is None:
            return f"metric '{key}' = {value!r}: report a real number"
        try:
            float(value)
        except (TypeError, ValueError, OverflowError, RuntimeError):
            return f"metric '{key}' = {str(value)[:40]!r}: report a real number"
    for field_name in ("acted", "at_bound"):
        flag = getattr(report, field_name)
        if flag is not None and (isinstance(flag, (str, bytes)) or flag not in (0, 1)):
            return f"{field_name} = {flag!r}: report True, False or None"
    for key, pair in report.bounds.items():
        lo, hi = pair
        if lo is not None and hi is not None and lo > hi:
            return f"bounds of '{key}': min {lo} > max {hi}"
    return ""


@dataclass
class StepEnd:
    """What the regularisers say at the end of a step: their metrics, the lines to print
    (``plugin <name>: <message>``) and a reason to stop (None: go on)."""

    metrics: dict[str, float] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    stop: str | None = None


class Regularisers:
    """The enabled regularisers of one run, in the order of their ``[plugins.*]`` sections.

    They are registered with a per-run pluggy manager (``pm``) so that pluggy calls them in
    that order; every method calls its hook through pluggy, so a plugin may implement a hook
    itself, wrap it (``@hookimpl(wrapper=True)``) or order itself (``tryfirst``).
    """

    def __init__(self, plugins: Sequence[tuple[str, Any]], coefs: Coefficients) -> None:
        self.coefs = coefs
        self.plugins: dict[str, Any] = dict(plugins)
        self.pm = pluginmanager.new_plugin_manager()
        pluginmanager.register_in_call_order(self.pm, plugins)
        pluginmanager.check_hooks(self.pm)

    @classmethod
    def from_config(
        cls, sections: Mapping[str, Any], coefs: Coefficients | None = None
    ) -> Regularisers:
        """Build each section's regulariser, ``cls(name, options, coefs)``, in order."""
        coefs = coefs if coefs is not None else Coefficients()
        installed = pluginmanager.regularisers()
        built = []
        for name, options in sections.items():
            try:
                built.append((name, installed[name].obj(name, options, coefs)))
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001 - a plugin's own bug, named in one line
                raise PluginError(name, "__init__", exc) from exc
        return cls(built, coefs)

    @property
    def names(self) -> list[str]:
        return list(self.plugins)

    def __len__(self) -> int:
        return len(self.plugins)

    def __getitem__(self, name: str) -> Any:
        return self.plugins[name]

    @property
    def needs_reference(self) -> bool:
        """Whether some regulariser asks for the reference policy's ``kl_ref_*``."""
        return any(getattr(p, "needs_reference", False) for p in self.plugins.values())

    def hook(self, name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call hook ``name`` through pluggy: ``[(plugin, result)]`` in TOML order."""
        return pluginmanager.call_hook(self.pm, name, **kwargs)

    def train_start(self, run: RunView) -> None:
        self.hook("chessrl_train_start", run=run)

    def loss_terms(
        self, out: TensorDict, batch: TensorDict, taken: Sequence[str] = ("objective",)
    ) -> list[LossTerm]:
        """Every plugin's terms this epoch, checked: LossTerm objects with new names."""
        terms: list[LossTerm] = []
        owners = {name: "the loss module" for name in taken}  # the names taken, and by whom
        for plugin, res in self.hook("chessrl_loss_terms", out=out, batch=batch, coefs=self.coefs):
            for term in res if isinstance(res, (list, tuple)) else [res]:
                if not isinstance(term, LossTerm):
                    raise PluginError(
                        plugin,
                        "chessrl_loss_terms",
                        TypeError(f"must return LossTerm objects, got {type(term).__name__}"),
                    )
                why = _bad_term(term, out)
                if why:
                    raise PluginError(plugin, "chessrl_loss_terms", TypeError(why))
                if term.name in owners:
                    raise PluginError(
                        plugin,
                        "chessrl_loss_terms",
                        ValueError(
                            f"loss term '{term.name}' already exists (from {owners[term.name]}); "
                            "give the term another name"
                        ),
                    )
                owners[term.name] = f"plugin {plugin}"
                terms.append(term)
        return terms

    def adjust_coefficients(self, metrics: Mapping[str, float], step: int) -> None:
        self.hook("chessrl_adjust_coefficients", metrics=metrics, coefs=self.coefs, step=step)

    def step_end(self, metrics: Mapping[str, float], step: int) -> StepEnd:
        """The reports of this step as metrics, messages and the (last) stop request."""
        end = StepEnd()
        for name, report in self.hook("chessrl_step_end", metrics=metrics, step=step):
            end.metrics.update(report_metrics(name, report))
            if report.message:
                end.messages.append(f"plugin {name}: {report.message}")
            if report.stop:
                end.stop = f"plugin {name} stopped training: {report.stop}"
        return end

    def eval_end(self, metrics: Mapping[str, float], step: int) -> None:
        self.hook("chessrl_eval_end", metrics=metrics, step=step)

    def train_end(self, run: RunView) -> None:
        self.hook("chessrl_train_end", run=run)

    def state_dict(self) -> dict[str, Any]:
        """``{plugin: state}`` for checkpoints."""
        from chessrl.checkpoint import plain

        states: dict[str, Any] = {}
        for plugin, s in self.hook("chessrl_state_dict"):
            try:  # what a checkpoint can hold (and load again without running code)
                states.update(plain(s))
            except TypeError as exc:
                raise PluginError(
                    plugin,
                    "chessrl_state_dict",
                    TypeError(f"{exc} (return tensors and plain data from state_dict())"),
                ) from None
        return states

    def load_state_dict(self, states: Mapping[str, Any]) -> None:
        self.hook("chessrl_load_state_dict", states=states)
