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
        bounds = [f"{w} {r[k]}" for k, w in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if k in r]
        if bounds:
            extra += " Range: " + ", ".join(bounds) + "."
        key = f"{prefix}{r['key']}"
        out.append(f"| `{key}` | {r['type']} | `{r['default']!r}` | {r['help']}{extra} |")
    return out


def reference_markdown() -> str:
    lines = ["## Core fields", ""]
    rows = [r for r in describe(Config) if not r["key"].startswith(("env.options", "plugins"))]
    lines += _table(rows)
    lines += ["", "## Games (`[env]`)", "",
              "`[env] name` picks the game; the other `[env]` keys are that game's options."]
    for name, reg in sorted(pluginmanager.games().items()):
        lines += ["", f"### `{name}`", ""] + _table(describe(reg.schema), "env.")
    lines += ["", "## Regularisers (`[plugins.<name>]`)", "",
              "A `[plugins.<name>]` table enables that regulariser with its options."]
    for name, reg in sorted(pluginmanager.regularisers().items()):
        lines += ["", f"### `{name}`", ""] + _table(describe(reg.obj.Config), f"plugins.{name}.")
    return "\n".join(lines)
