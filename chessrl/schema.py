"""Typed option schemas: dataclasses whose fields carry help text, choices and bounds.

The core experiment config, every game's options and every regulariser's options use the
same machinery, so every section is validated the same strict way: an unknown key, a wrong
type, a number that is not finite (``inf``, ``nan``) or an out-of-range value is a
:class:`UserError` naming the key, the value and what is expected. Bounds on a list field
apply to each element; ``length`` fixes how many elements it has.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
import types
import typing
from typing import Any

from chessrl.errors import UserError


def opt(
    default: Any,
    help: str,
    *,
    choices: tuple | None = None,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    length: int | None = None,
) -> Any:
    """A schema field: its default, a one-line help text, and optional choices or bounds.

    For a list field the bounds apply to every element and ``length`` is its required size.
    """
    meta = {
        "help": help,
        "choices": choices,
        "ge": ge,
        "le": le,
        "gt": gt,
        "lt": lt,
        "length": length,
    }
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type, help: str) -> Any:
    """A nested section field whose value is an instance of dataclass ``cls``."""
    return dataclasses.field(default_factory=cls, metadata={"help": help, "section": True})


class Locator:
    """Maps dotted keys to where their value came from: a line of the TOML source (best
    effort), or the ``--set`` item that overrode the key (or a table above it)."""

    def __init__(
        self, path: str = "<config>", text: str = "", overrides: dict[str, str] | None = None
    ):
        self.path = path
        self.overrides = overrides or {}
        self.lines: dict[str, int] = {}
        table = ""
        for no, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if line.startswith("[") and not line.startswith("[["):
                table = line.strip("[]").strip().replace('"', "").replace(" ", "")
                self.lines.setdefault(table, no)
            elif "=" in line and not line.startswith("#"):
                key = line.split("=", 1)[0].strip().strip('"')
                full = f"{table}.{key}" if table else key
                self.lines.setdefault(full, no)

    def where(self, key: str) -> str:
        parts = key.split(".")
        scopes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]  # key, tables above
        item = next((self.overrides[s] for s in scopes if s in self.overrides), None)
        if item is None and key not in self.lines:  # a table only --set made: its first item
            item = next((i for o, i in self.overrides.items() if o.startswith(key + ".")), None)
        if item is not None:
            return f"--set {item}: "
        # the key's line; in an inline table, the line of the table
        no = next((self.lines[s] for s in scopes if s in self.lines), None)
        return f"{self.path}: " if no is None else f"{self.path}:{no}: "

    def where_section(self, prefix: str) -> str:
        """Where a cross-field check of section ``prefix`` failed: the section's line (or the
        ``--set`` item that replaced it), plus every ``--set`` item that changed a key in it,
        since one of them may be the cause."""
        base = self.where(prefix)
        if base.startswith("--set "):
            return base
        inside = [
            item
            for key, item in self.overrides.items()
            if not prefix or key.startswith(prefix + ".")
        ]
        return f"{base[:-2]} with --set {', --set '.join(inside)}: " if inside else base


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return f"a list of {_type_name(inner)}"
    if origin is dict:
        return "a table"
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        type(None): "nothing",
    }.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any) -> Any:
    """Return ``value`` as type ``tp`` or raise TypeError. Ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg)
            except TypeError:
                continue
        raise TypeError
    if tp is type(None):
        if value is None:
            return None
        raise TypeError
    if origin is list:
        if not isinstance(value, list):
            raise TypeError
        (inner,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, inner) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    raise TypeError


def suggest(word: str, options: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def table(data: dict, key: str, loc: Locator, what: str = "a table", prefix: str = "") -> dict:
    """``data[key]`` (``{}`` when absent), which must be a TOML table; else a one-line
    :class:`UserError` saying that ``prefix.key`` must be ``what``."""
    full = f"{prefix}.{key}" if prefix else key
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise UserError(f"{loc.where(full)}'{full}' must be {what}")
    return value


def build(
    cls: type,
    data: dict,
    *,
    prefix: str = "",
    loc: Locator | None = None,
    extra: tuple[str, ...] = (),
) -> Any:
    """Build dataclass ``cls`` from ``data``, strictly. Keys in ``extra`` are left alone."""
    loc = loc or Locator()
    if not isinstance(data, dict):
        raise UserError(f"{loc.where(prefix)}'{prefix}' must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key in extra:
            continue
        if key not in fields:
            raise UserError(
                f"{loc.where(full)}unknown key '{full}'{suggest(key, fields)} "
                f"(known keys: {', '.join(sorted(fields))})"
            )
        f = fields[key]
        tp = hints[key]
        if f.metadata.get("section"):
            kwargs[key] = build(tp, value, prefix=full, loc=loc)
            continue
        kwargs[key] = check_value(full, value, tp, f.metadata, loc)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # a __post_init__ cross-field check
        raise UserError(f"{loc.where_section(prefix)}{prefix or 'config'}: {exc}") from None


def check_value(full: str, value: Any, tp: Any, meta: typing.Mapping, loc: Locator) -> Any:
    try:
        value = _coerce(value, tp)
    except TypeError:
        raise UserError(
            f"{loc.where(full)}'{full}' = {value!r} has the wrong type: expected {_type_name(tp)}"
        ) from None
    for x in value if isinstance(value, list) else [value]:
        if isinstance(x, float) and not math.isfinite(x):
            raise UserError(
                f"{loc.where(full)}'{full}' = {value!r} is not a finite number; "
                "inf and nan are not allowed: give a finite value"
            )
    length = meta.get("length")
    if length is not None and isinstance(value, list) and len(value) != length:
        raise UserError(
            f"{loc.where(full)}'{full}' = {value!r} has {len(value)} element(s): "
            f"expected exactly {length}"
        )
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise UserError(
            f"{loc.where(full)}'{full}' = {value!r} is not allowed: expected one of "
            f"{', '.join(repr(c) for c in choices)}{suggest(str(value), map(str, choices))}"
        )
    for x in value if isinstance(value, list) else [value]:
        if not isinstance(x, (int, float)) or isinstance(x, bool):
            continue
        for bound, ok, word in _BOUNDS:
            b = meta.get(bound)
            if b is not None and not ok(x, b):
                want = (
                    f"every element must be {word} {b} ({x!r} is not)"
                    if isinstance(value, list)
                    else f"expected {word} {b}"
                )
                raise UserError(f"{loc.where(full)}'{full}' = {value!r} is out of range: {want}")
    return value


_BOUNDS = (
    ("ge", operator.ge, ">="),
    ("le", operator.le, "<="),
    ("gt", operator.gt, ">"),
    ("lt", operator.lt, "<"),
)


def to_dict(obj: Any) -> Any:
    """A dataclass (nested) as plain dicts, in field order."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    return obj


def describe(cls: type, prefix: str = "") -> list[dict[str, Any]]:
    """Every field of ``cls`` (recursively): key, type, default, help, choices, bounds."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        full = f"{prefix}.{f.name}" if prefix else f.name
        if f.metadata.get("section"):
            rows.extend(describe(hints[f.name], full))
            continue
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        )
        rows.append(
            {
                "key": full,
                "type": _type_name(hints[f.name]),
                "default": default,
                "help": f.metadata.get("help", ""),
                **{
                    k: f.metadata.get(k)
                    for k in ("choices", "ge", "le", "gt", "lt", "length")
                    if f.metadata.get(k) is not None
                },
            }
        )
    return rows
