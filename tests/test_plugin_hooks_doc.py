"""docs/plugins.md documents every hook (heading = its signature, then an example) and every
option of every built-in regulariser."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from chessrl import hookspecs
from chessrl.pluginmanager import regularisers

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
BUILTINS = ("entropy_bonus", "kl_penalty", "adaptive_kl", "entropy_floor")


def hook_signatures() -> list[str]:
    """``name(arg, ...)`` of every hook specification in chessrl/hookspecs.py."""
    return [
        f"{name}({', '.join(inspect.signature(fn).parameters)})"
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, "chessrl_spec")
    ]


def sections(text: str) -> dict[str, str]:
    """Heading text (without #'s and backticks) -> the body up to the next heading."""
    parts = re.split(r"^#{1,6} +(.+?) *$", text, flags=re.M)
    return {parts[i].strip("` "): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_hookspecs_are_found() -> None:
    assert "chessrl_loss_terms(out, batch, coefs)" in hook_signatures()


@pytest.mark.parametrize("signature", hook_signatures())
def test_every_hook_has_a_section_with_an_example(signature: str) -> None:
    docs = sections(DOC.read_text())
    assert signature in docs, f"docs/plugins.md has no heading '### {signature}'"
    assert "```python" in docs[signature], (
        f"the section '{signature}' in docs/plugins.md has no example"
    )


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_option_is_in_its_table(name: str) -> None:
    body = sections(DOC.read_text())[name]
    for f in dataclasses.fields(regularisers()[name].obj.Config):
        assert re.search(rf"^\| *`{f.name}` *\|", body, flags=re.M), (
            f"docs/plugins.md: option '{f.name}' of {name} is missing from its table"
        )
