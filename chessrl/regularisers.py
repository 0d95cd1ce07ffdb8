"""What regulariser plugins share with the core: loss terms, named coefficients, reports.

A regulariser is a class registered by ``chessrl_register_regularisers``. For each enabled
``[plugins.<name>]`` section the trainer builds ``cls(name, config, coefs)`` and registers
the instance with a per-run plugin manager under ``name``; its ``@hookimpl`` methods are
then called every step. See docs/plugins.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chessrl.errors import UserError
from chessrl.health import declared_key
from chessrl.hookspecs import hookimpl

if TYPE_CHECKING:  # torch is imported by the code that runs a step; the CLI starts without it
    import torch


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
    stop: str | None = None      # a reason to stop training (an entropy floor in 'stop' mode)
    message: str | None = None   # one line the trainer prints (a monitor's warning)
    bounds: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=dict)
    floors: dict[str, float] = field(default_factory=dict)

    def declared_metrics(self, name: str) -> dict[str, float]:
        """The declared lines as ``plugin/<name>/<key>@<kind>`` metrics (non-finite sides left out)."""
        lines: list[tuple[str, str, Any]] = []
        for key, pair in self.bounds.items():
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise TypeError(f"plugin {name}: bounds['{key}'] must be a (min, max) pair, got {pair!r}")
            lines += [(key, "min", pair[0]), (key, "max", pair[1])]
        lines += [(k, "target", v) for k, v in self.targets.items()]
        lines += [(k, "floor", v) for k, v in self.floors.items()]
        out = {}
        for key, kind, value in lines:
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"plugin {name}: the {kind} of '{key}' must be a number, got {value!r}")
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
    history: list[tuple[str, float, float]] = field(default_factory=list)  # (by, before, after) this step

    def at_bound(self) -> bool:
        return math.isclose(self.value, self.min, rel_tol=1e-9, abs_tol=1e-12) or \
            math.isclose(self.value, self.max, rel_tol=1e-9, abs_tol=1e-12)


class Coefficients:
    """Named, bounded coefficients shared by the plugins of one run.

    A term plugin *declares* the coefficient it multiplies; controller plugins *set* it. When
    two controllers act on one coefficient they run in the order of their ``[plugins.*]``
    sections and each sees the value the previous one left; every change is clamped to the
    declared bounds and recorded with the plugin that made it.
    """

    def __init__(self) -> None:
        self._c: dict[str, Coefficient] = {}

    def declare(self, name: str, value: float, *, owner: str, min: float = 0.0, max: float = math.inf) -> None:
        if name in self._c:
            raise UserError(f"plugins '{self._c[name].owner}' and '{owner}' both declare coefficient '{name}'; "
                            "enable only one of them")
        if not (min <= value <= max):
            raise UserError(f"plugins.{owner}: coefficient '{name}' = {value} is outside its bounds [{min}, {max}]")
        self._c[name] = Coefficient(name, float(value), float(min), float(max), owner)

    def __contains__(self, name: str) -> bool:
        return name in self._c

    def __getitem__(self, name: str) -> Coefficient:
        try:
            return self._c[name]
        except KeyError:
            raise UserError(f"no enabled plugin declares coefficient '{name}' (declared: "
                            f"{', '.join(self._c) or 'none'})") from None

    def get(self, name: str) -> float:
        return self[name].value

    def set(self, name: str, value: float, *, by: str, min: float = -math.inf, max: float = math.inf) -> float:
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
        raise UserError(f"plugins.{plugin}: adjusts coefficient '{name}', which no enabled plugin declares; {hint}")


def metric_value(metrics: dict[str, Any], key: str, plugin: str) -> float:
    """``metrics[key]`` as a float, or a UserError naming the plugin and the available keys."""
    if key not in metrics:
        raise UserError(f"plugins.{plugin}: metric '{key}' is not logged in this run; "
                        f"set plugins.{plugin}.metric to one of: {', '.join(sorted(metrics))}")
    return float(metrics[key])


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ``mask``; 0 (not NaN) when the mask is empty."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


@dataclass
class NoOptions:
    """A regulariser without options."""


class Regulariser:
    """Convenience base class: stores name, config, coefficients; default checkpoint state.

    Subclasses set ``Config`` (a dataclass built with :func:`chessrl.schema.opt`) and add
    ``@hookimpl`` methods. ``needs_reference = True`` asks the trainer for ``kl_ref_*``.
    """

    Config: Any = NoOptions
    needs_reference: bool = False

    def __init__(self, name: str, config: Any, coefs: Coefficients) -> None:
        self.name, self.config, self.coefs = name, config, coefs

    def state_dict(self) -> dict:
        """This plugin's checkpoint state (override for stateful plugins)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""

    @hookimpl
    def chessrl_state_dict(self):
        return {self.name: self.state_dict()}

    @hookimpl
    def chessrl_load_state_dict(self, states):
        if self.name in states:
            self.load_state_dict(states[self.name])
