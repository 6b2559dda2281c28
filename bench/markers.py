"""Put a benchmark's table into the doc that shows it, between its markers, so the docs show what ran."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def replace_section(name: str, text: str) -> Path:
    """Replace what stands between `<!-- name -->` and `<!-- /name -->` in the one doc (README.md or
    docs/*.md) that holds them; return that doc."""
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    holders = [doc for doc in docs if begin in (content := doc.read_text()) and end in content]
    if len(holders) != 1:
        raise SystemExit(f"{len(holders)} docs hold {begin} ... {end}; expected one")
    doc = holders[0]
    content = doc.read_text()
    start, stop = content.index(begin) + len(begin), content.index(end)
    doc.write_text(content[:start] + "\n" + text + content[stop:])
    return doc
