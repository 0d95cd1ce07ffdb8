"""Every docs example tagged ``<!-- test -->`` runs, so the docs cannot rot.

A fenced code block in ``docs/*.md`` whose opening fence is on the line right after a line
``<!-- test -->`` is an example that must work as written:

* ```` ```python ```` blocks are ``exec``'d in a fresh namespace, in an empty temporary
  working directory; they check their own results with ``assert``.
* ```` ```sh ```` blocks run as one ``bash -e -o pipefail`` script (every line must succeed;
  shell variables carry from line to line), in a temporary working directory that links
  ``examples/`` and ``docs/`` from the repository, with ``chessrl`` meaning
  ``sys.executable -m chessrl``, the venv's ``bin/`` first on ``PATH``, ``TMPDIR`` inside the
  test's tmp dir and ``WANDB_MODE=disabled``.

Each block is its own test, with id ``<page>:<line of the opening fence>``. New tagged blocks
on any page are picked up automatically.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
MARKER = "<!-- test -->"
PYTHON = ("python", "py")
SHELL = ("sh", "bash")
TIMEOUT_S = 120  # a tagged example should take seconds; this only stops a hang


@dataclass(frozen=True)
class Example:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    problem: str = ""  # a malformed tag: reported as a failing test, never silently skipped


def _close(lines: list[str], start: int, ticks: int) -> int | None:
    """Index of the line closing a fence of ``ticks`` backticks opened before ``start``."""
    for j in range(start, len(lines)):
        s = lines[j].strip()
        if s.startswith("`" * ticks) and not s.strip("`"):
            return j
    return None


def _examples(docs: Path = DOCS) -> list[Example]:
    found = []
    for page in sorted(docs.glob("*.md")):
        lines = page.read_text().splitlines()
        i = 0
        while i < len(lines):
            raw = lines[i]
            if raw.lstrip().startswith("```"):  # an untagged block: a marker inside it is text
                s = raw.lstrip()
                end = _close(lines, i + 1, len(s) - len(s.lstrip("`")))
                i = len(lines) if end is None else end + 1
                continue
            if raw.strip() != MARKER:
                i += 1
                continue
            fence_no = i + 2
            opening = lines[i + 1] if i + 1 < len(lines) else ""
            stripped = opening.lstrip()
            if not stripped.startswith("```"):
                found.append(
                    Example(
                        page.name,
                        fence_no,
                        "",
                        "",
                        f"{MARKER} on line {i + 1} is not followed by a ``` fence",
                    )
                )
                i += 1
                continue
            indent = len(opening) - len(stripped)
            ticks = len(stripped) - len(stripped.lstrip("`"))
            lang = (stripped[ticks:].split() or [""])[0].lower()
            end = _close(lines, i + 2, ticks)
            if end is None:
                found.append(Example(page.name, fence_no, lang, "", "the fence is never closed"))
                break
            # a block indented under a list item: drop the fence's indentation from each line
            body = [
                ln[indent:] if not ln[:indent].strip() else ln.lstrip() for ln in lines[i + 2 : end]
            ]
            if lang not in PYTHON + SHELL:
                found.append(
                    Example(
                        page.name,
                        fence_no,
                        lang,
                        "",
                        f"tagged block has language {lang!r}; tag only python or sh blocks",
                    )
                )
            else:
                found.append(
                    Example(page.name, fence_no, lang, textwrap.dedent("\n".join(body)) + "\n")
                )
            i = end + 1
    return found


EXAMPLES = _examples()


def test_docs_have_tagged_examples():
    assert EXAMPLES, f"no {MARKER} blocks found in {DOCS}"


def _run_python(ex: Example, cwd: Path) -> None:
    code = compile(ex.code, f"docs/{ex.page}:{ex.line}", "exec")
    old = Path.cwd()
    os.chdir(cwd)
    try:
        exec(code, {"__name__": "__doc_example__"})
    finally:
        os.chdir(old)


def _run_shell(ex: Example, cwd: Path) -> None:
    for name in ("examples", "docs"):
        (cwd / name).symlink_to(REPO / name, target_is_directory=True)
    tmp = cwd / ".tmp"
    tmp.mkdir()
    script = cwd / ".example.sh"
    # `chessrl` is this interpreter's module, whatever is (or is not) installed on PATH
    script.write_text(f'chessrl() {{ "{sys.executable}" -m chessrl "$@"; }}\n' + ex.code)
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "TMPDIR": str(tmp),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-x", str(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"docs/{ex.page}:{ex.line}: exit {proc.returncode}\n--- script\n{ex.code}"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr (with -x trace)\n{proc.stderr[-4000:]}",
            pytrace=False,
        )


@pytest.mark.parametrize("ex", EXAMPLES, ids=[f"{e.page}:{e.line}" for e in EXAMPLES])
def test_doc_example(ex: Example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if ex.problem:
        pytest.fail(f"docs/{ex.page}:{ex.line}: {ex.problem}", pytrace=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    if ex.lang in PYTHON:
        _run_python(ex, tmp_path)
    else:
        _run_shell(ex, tmp_path)


def test_the_extractor_sees_tags_fences_and_mistakes(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "\n".join(
            [
                "intro",
                "<!-- test -->",
                "```python",
                "x = 1",
                "```",  # lines 2-5: tagged python
                "```python",
                "untagged()",
                "```",  # 6-8: not tagged, ignored
                "<!-- test -->",
                "",
                "```sh",
                "echo no",
                "```",  # 9-13: blank line breaks the tag
                "<!-- test -->",
                "```toml",
                "a = 1",
                "```",  # 14-17: wrong language
                "  <!-- test -->",
                "  ```sh",
                "  if true; then",
                "    echo hi",
                "  fi",
                "  ```",  # 18-23: in a list
                "````markdown",
                "<!-- test -->",
                "```sh",
                "shown()",
                "```",
                "````",  # 24-29: a marker shown as text
                "<!-- test -->",
                "```python",
                "if True:",
                "    y = 2",
                "```",  # 30-34: indentation kept
            ]
        )
        + "\n"
    )
    got = _examples(tmp_path)
    assert [(e.line, e.lang, e.code, bool(e.problem)) for e in got] == [
        (3, "python", "x = 1\n", False),
        (10, "", "", True),
        (15, "toml", "", True),
        (19, "sh", "if true; then\n  echo hi\nfi\n", False),
        (31, "python", "if True:\n    y = 2\n", False),
    ]
