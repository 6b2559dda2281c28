"""Put a script's table into the README between its markers, so the README shows what ran."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def replace_section(name: str, text: str, readme: Path = README) -> None:
    """Replace what stands between `<!-- name -->` and `<!-- /name -->` with text."""
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    content = readme.read_text()
    if begin not in content or end not in content:
        raise SystemExit(f"{readme} has no {begin} ... {end} markers")
    start, stop = content.index(begin) + len(begin), content.index(end)
    readme.write_text(content[:start] + "\n" + text + content[stop:])


def publish(section: str, title: str, table: str, update_readme: bool) -> None:
    """Write a table to bench/results/<section>.md under its title, print it, and maybe put it in the README."""
    out = README.parent / "bench" / "results" / f"{section.replace('-', '_')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# {title}\n\n{table}")
    print(table)
    if update_readme:
        replace_section(section, table)
