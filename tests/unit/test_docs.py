"""The documentation a newcomer reads: its tables render as tables, and the README's
settings table names every ``LIQMON_*`` setting there is, and only those."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
_CODE_SPAN = re.compile(r"`[^`]*`")
_SEPARATOR = re.compile(r"^\|(\s*:?-+:?\s*\|)+$")


def _markdown_files() -> list[Path]:
    """The repository's tracked Markdown files."""
    proc = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:  # not a git checkout (an unpacked archive): every .md but the venv's
        return sorted(p for p in ROOT.rglob("*.md") if ".venv" not in p.parts)
    return [ROOT / name for name in proc.stdout.split()]


def _cells(row: str) -> int:
    """A table row's cell count: its pipes outside code spans and escapes, less one."""
    return _CODE_SPAN.sub("", row.replace("\\|", "")).count("|") - 1


def table_problems(text: str) -> list[str]:
    """Where a Markdown table would not render as one (GitHub's rules): each run of lines
    starting with ``|`` outside code blocks follows a blank line, its second line is the
    separator, and every row has the header's number of cells."""
    lines = text.splitlines()
    problems: list[str] = []
    in_code, i = False, 0
    while i < len(lines):
        if lines[i].lstrip().startswith("```"):
            in_code = not in_code
        if in_code or not lines[i].startswith("|"):
            i += 1
            continue
        end = next((j for j in range(i, len(lines)) if not lines[j].startswith("|")), len(lines))
        if i > 0 and lines[i - 1].strip():
            problems.append(f"{i + 1}: a table row right after text (a blank line first, or the table is broken)")
        if end - i < 2 or not _SEPARATOR.match(lines[i + 1].strip()):
            problems.append(f"{i + 1}: rows without a header and separator line")
        header = _cells(lines[i])
        problems += [f"{j + 1}: {_cells(lines[j])} cells, the header has {header}"
                     for j in range(i, end) if _cells(lines[j]) != header]
        i = end
    return problems


def test_a_table_broken_by_a_paragraph_is_found() -> None:
    text = "| a | b |\n|---|---|\n| 1 | 2 |\nA paragraph.\n| 3 | 4 |\n"
    assert table_problems(text) == ["5: a table row right after text (a blank line first, or the table is broken)",
                                    "5: rows without a header and separator line"]
    assert table_problems("| a | b |\n|---|---|\n| `x\\|y` | 2 | 3 |\n") == ["3: 3 cells, the header has 2"]
    assert table_problems("text\n\n| a | `b|c` |\n| :-- | --: |\n| 1 | 2 |\n\n```\n| not a table\n```\n") == []


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_markdown_table_renders_as_one(path: Path) -> None:
    assert not table_problems(path.read_text(encoding="utf-8")), table_problems(path.read_text(encoding="utf-8"))


def _readme_settings() -> list[str]:
    """The variables named by the rows of the README's settings table (``A`` / ``_B`` is
    A and A with its last word replaced)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("### Settings"):]
    table = table[table.index("\n|"):]
    table = table[:table.index("\n\n")]
    names: list[str] = []
    for row in table.strip().splitlines()[2:]:
        first, *more = [n.strip("` ") for n in row.split("|")[1].split(" / ")]
        names.append(first)
        names += [n if n.startswith("LIQMON_") else first[:first.rindex("_")] + n for n in more]
    return names


def test_the_readme_settings_table_is_the_settings() -> None:
    documented = _readme_settings()
    settings = [f"LIQMON_{name.upper()}" for name in Settings.model_fields]
    assert len(documented) == len(set(documented)), documented
    assert sorted(documented) == sorted(settings)
