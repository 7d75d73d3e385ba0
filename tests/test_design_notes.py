"""Every citation of the design notes in the code names a section that exists in ``docs/design.md``."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: docs/design.md, "Camera basis" / ``docs/design.md`` ("Depth rendering") / docs/design.md's "Up axis"...
CITATION = re.compile(r"design\.md`{0,2}(?:'s)?,?\s*\(?\"([^\"]+)\"")


def _headings() -> set[str]:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    return {line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")}


def test_cited_sections_exist():
    headings = _headings()
    cited = {}
    for folder in ("src", "examples", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == Path(__file__).name:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for name in CITATION.findall(line):
                    cited.setdefault(name, []).append(f"{path.relative_to(ROOT)}:{number}")
    assert len(cited) >= 10  # the pattern still finds the citations
    missing = {name: where for name, where in cited.items() if name not in headings}
    assert missing == {}, f"cited sections that docs/design.md does not have: {missing}"


def test_internal_references_exist():
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    referenced = set(re.findall(r"see \"([^\"]+)\"", text))
    assert referenced and referenced <= _headings(), referenced - _headings()
