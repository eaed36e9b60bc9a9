"""docs/architecture.md's "how to add" section names files that exist (issue "One observation,
one pass", 7): a path with NAME stands for a new file in a directory that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def how_to_add() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text()
    return text[text.index("## 10. How to add"):]


def test_every_path_the_how_to_add_section_names_exists() -> None:
    paths = re.findall(r"`((?:controller|probes|reconcilers|docs|tests)/[^`]*)`", how_to_add())
    assert len(paths) >= 9
    for path in paths:
        if "NAME" in path:
            assert (ROOT / path).parent.is_dir(), path
        else:
            assert (ROOT / path).exists(), path


def test_the_counts_it_gives_are_the_files_it_names() -> None:
    items = re.split(r"\n- ", how_to_add())[1:]
    assert len(items) == 4
    for item in items:
        count = re.search(r"\((\d) files\)", item)
        assert count is not None, item[:40]
        named = set(re.findall(r"`((?:controller|probes|reconcilers|docs)/[^`]*\.\w+)`", item))
        assert len(named) == int(count.group(1)), (item[:40], sorted(named))
