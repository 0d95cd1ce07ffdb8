"""Docs are part of the work: every config field is documented and doc examples run."""

import re
from pathlib import Path

from chessrl import pluginmanager
from chessrl.config import Config
from chessrl.schema import describe

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_config_field_is_in_docs_config_md():
    text = (DOCS / "config.md").read_text()
    keys = [
        r["key"] for r in describe(Config) if not r["key"].startswith(("env.options", "plugins"))
    ]
    keys += [
        f"env.{r['key']}" for reg in pluginmanager.games().values() for r in describe(reg.schema)
    ]
    keys += [
        f"plugins.{n}.{r['key']}"
        for n, reg in pluginmanager.regularisers().items()
        if reg.plugin in {"entropy_bonus", "kl_penalty", "adaptive_kl", "entropy_floor"}
        for r in describe(reg.obj.Config)
    ]
    missing = [k for k in keys if f"`{k}`" not in text]
    assert not missing, f"regenerate docs/config.md (chessrl config reference): missing {missing}"


def test_docs_link_only_to_existing_pages():
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([\w\-./]+\.md)(?:#[\w\-]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_docs_cite_only_files_in_the_repository():
    """The docs, the README and the example configs are self-contained: every ``*.md`` they name
    is in the repository (or is the report chessrl writes into a run directory); nothing points
    at notes that live elsewhere (a post-mortem, a seed folder)."""
    import subprocess

    root = DOCS.parent
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=root, capture_output=True, text=True
    ).stdout.split()
    if not tracked:  # not a git checkout (an sdist): the files on disk
        tracked = [str(p.relative_to(root)) for p in root.rglob("*.md")]
    written = {"report.md"}  # `chessrl report RUN_DIR` writes RUN_DIR/report.md
    pages = [
        root / "README.md",
        *sorted(DOCS.glob("*.md")),
        *sorted((root / "examples").glob("*.toml")),
    ]
    missing = []
    for page in pages:
        text = page.read_text()
        if "shared/seed" in text:
            missing.append(f"{page.name}: shared/seed")
        for name in set(re.findall(r"[\w./-]*\w\.md\b", text)):
            path = re.sub(r"^(\.\.?/)+", "", name)
            if path.rsplit("/", 1)[-1] not in written and not any(
                f == path or f.endswith("/" + path) for f in tracked
            ):
                missing.append(f"{page.name}: {name}")
    assert not missing, f"summarise these in the doc itself instead of citing them: {missing}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_health_rule_is_documented_under_its_code():
    """docs/diagnostics.md has a section per rule of chessrl.rules.RULES, in the same order,
    under the rule's anchor and opening with its severity, and no section for a rule that
    does not exist."""
    from chessrl.rules import RULES

    text = (DOCS / "diagnostics.md").read_text()
    section = text.split("\n## Health findings\n")[1].split("\n## ")[0]
    documented = re.findall(r"^### (`\w+`)\n(.*)$", section, re.M)
    assert [h.strip("`") for h, _ in documented] == [r.code for r in RULES]
    for rule, (heading, first_line) in zip(RULES, documented):
        assert rule.anchor == f"docs/diagnostics.md#{_slug(heading)}"
        assert first_line.startswith(f"**{rule.severity}**"), (rule.code, first_line)


def test_every_fixed_metric_key_is_in_docs_metrics_md():
    """chessrl.keys spells the keys docs/metrics.md defines: each fixed key is in the page, and
    each fixed train/, rollout/ and time/ key of the page is a constant."""
    from chessrl import keys as K

    text = (DOCS / "metrics.md").read_text()
    documented = {k for k in re.findall(r"`((?:train|rollout|time)/[a-z0-9_]+)`", text)}
    assert set(K.FIXED) == documented
    budget = set(re.findall(r"`budget/<term>/([a-z_]+)`", text))
    assert budget == set(K.BUDGET_METRICS)
    match = set(re.findall(r"`eval/<opponent>/([a-z_]+)`", text))
    assert match == set(K.MATCH_METRICS)


def test_docs_config_md_rows_match_the_generated_reference():
    """Every table row of docs/config.md is what `chessrl config reference` writes for its key
    today (a changed default, range or help text is regenerated, not left to drift)."""
    from chessrl.configdoc import reference_markdown

    def rows(text: str) -> dict[str, str]:
        return {
            m.group(1): line
            for line in text.splitlines()
            if (m := re.match(r"\| `([^`]+)` \|", line))
        }

    documented, generated = rows((DOCS / "config.md").read_text()), rows(reference_markdown())
    stale = [k for k, line in documented.items() if k in generated and generated[k] != line]
    assert not stale, f"regenerate docs/config.md (chessrl config reference): {stale}"
