"""The docs and the code speak of the tool to its users: no "session N" diary in what ships or documents it."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIARY = re.compile(r"\bsessions?\s+\d", re.IGNORECASE)
TEXT = {".md", ".py", ".json", ".txt", ".sh", ".toml", ".yaml", ".yml"}


def _checked_files() -> list[Path]:
    files = [REPO / "README.md", REPO / "MODEL_CARD.md"]
    for folder in ("docs", "lldif_edge"):
        files += sorted(p for p in (REPO / folder).rglob("*") if p.is_file() and p.suffix in TEXT)
    return files


def test_the_diary_pattern_finds_what_it_should():
    assert DIARY.search("trained in session 6") and DIARY.search("Sessions 9 and 10 ran")
    assert not DIARY.search("ort.InferenceSession 1") and not DIARY.search("a session of the loop")


def test_no_session_numbers_in_docs_or_code():
    found = [f"{p.relative_to(REPO)}:{i}: {line.strip()[:100]}"
             for p in _checked_files() for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
             if DIARY.search(line)]
    assert not found, "say it as a fact about the tool, not a diary entry:\n" + "\n".join(found)
