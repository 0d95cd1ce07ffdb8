"""Docs are part of the work: every config field is documented and doc examples run."""

import re
from pathlib import Path

from chessrl import pluginmanager
from chessrl.config import Config
from chessrl.schema import describe

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_config_field_is_in_docs_config_md():
    text = (DOCS / "config.md").read_text()
    keys = [r["key"] for r in describe(Config) if not r["key"].startswith(("env.options", "plugins"))]
    keys += [f"env.{r['key']}" for reg in pluginmanager.games().values() for r in describe(reg.schema)]
    keys += [f"plugins.{n}.{r['key']}" for n, reg in pluginmanager.regularisers().items()
             if reg.plugin in {"entropy_bonus", "kl_penalty", "adaptive_kl", "entropy_floor"}
             for r in describe(reg.obj.Config)]
    missing = [k for k in keys if f"`{k}`" not in text]
    assert not missing, f"regenerate docs/config.md (chessrl config reference): missing {missing}"


def test_docs_link_only_to_existing_pages():
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([\w\-./]+\.md)(?:#[\w\-]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
