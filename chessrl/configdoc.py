"""The config reference (docs/config.md) generated from the schemas' help texts."""

from __future__ import annotations

from chessrl import pluginmanager
from chessrl.config import Config
from chessrl.schema import describe


def _table(rows: list[dict], prefix: str = "") -> list[str]:
    out = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for r in rows:
        extra = ""
        if "choices" in r:
            extra = " One of: " + ", ".join(f"`{c}`" for c in r["choices"]) + "."
        bounds = [
            f"{w} {r[k]}"
            for k, w in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
            if k in r
        ]
        if bounds:
            extra += (
                (" Range (each element): " if r["type"].startswith("a list") else " Range: ")
                + ", ".join(bounds)
                + "."
            )
        if "length" in r:
            extra += f" Exactly {r['length']} elements."
        key = f"{prefix}{r['key']}"
        out.append(f"| `{key}` | {r['type']} | `{r['default']!r}` | {r['help']}{extra} |")
    return out


def _builtin(reg) -> bool:
    """Shipped with chessrl (third-party plugins document their own options)."""
    module = getattr(pluginmanager.get_plugin_manager().get_plugin(reg.plugin), "__name__", "")
    return module.startswith("chessrl.")


def _origin(reg) -> str:
    """`` (from chessrl-l2-init 0.1.0)`` for a third-party plugin's section heading."""
    pm = pluginmanager.get_plugin_manager()
    dist = dict((id(p), d) for p, d in pm.list_plugin_distinfo()).get(id(pm.get_plugin(reg.plugin)))
    return f" (from {dist.metadata['name']} {dist.version})" if dist else f" (plugin {reg.plugin})"


def reference_markdown(builtin_only: bool = False) -> str:
    """Every config field with its help text: the core's, then each installed game's and
    regulariser's (third-party ones marked with their distribution, unless ``builtin_only``:
    docs/config.md documents what ships with chessrl)."""
    lines = ["## Core fields", ""]
    rows = [r for r in describe(Config) if not r["key"].startswith(("env.options", "plugins"))]
    lines += _table(rows)
    lines += [
        "",
        "## Games (`[env]`)",
        "",
        "`[env] name` picks the game; the other `[env]` keys are that game's options.",
    ]
    for name, reg in sorted(pluginmanager.games().items()):
        if _builtin(reg) or not builtin_only:
            title = f"### `{name}`" + ("" if _builtin(reg) else _origin(reg))
            lines += ["", title, ""] + _table(describe(reg.schema), "env.")
    lines += [
        "",
        "## Regularisers (`[plugins.<name>]`)",
        "",
        "A `[plugins.<name>]` table enables that regulariser with its options.",
    ]
    for name, reg in sorted(pluginmanager.regularisers().items()):
        if _builtin(reg) or not builtin_only:
            title = f"### `{name}`" + ("" if _builtin(reg) else _origin(reg))
            lines += ["", title, ""] + _table(describe(reg.obj.Config), f"plugins.{name}.")
    return "\n".join(lines)
