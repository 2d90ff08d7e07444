"""The written face of the product: a short README, current facts only, no dead paths."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
#: Words of a development diary (split so this file does not match itself).
DIARY = re.compile("|".join(["this (st" + "op|ro" + "und)", "last st" + "op", "lent th" + "is",
                             "previous bu" + "ild", "earlier (ro" + "und|st" + "op)"]), re.I)
TOP = ("worker/", "consumers/", "model_store/", "deploy/", "tests/", "bench/", "docs/",
       ".ci/")


def tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    return [ROOT / p for p in out if (ROOT / p).is_file()]


def test_readme_is_a_short_user_guide() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines"
    text = "\n".join(lines)
    for must in ("## The two commands", "./dev.sh demo", "./dev.sh test", "docs/"):
        assert must in text


def test_no_development_diary_outside_the_changelog() -> None:
    hits = []
    for path in tracked():
        if path.name == "CHANGELOG.md" or path.suffix in {".png", ".jsonl", ".json"}:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        hits += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in DIARY.finditer(text)]
    assert hits == []


def named_paths(text: str) -> set[str]:
    """Repository paths a page names: in backticks or as relative link targets."""
    found = set()
    for quoted in re.findall(r"`([^`\s]+)`", text):
        token = quoted.split(":")[0].rstrip(".,)")
        if token.startswith(TOP) or re.fullmatch(r"[\w.-]+\.(md|toml|yml|yaml|py)", token):
            found.add(token)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_a_page_names_exists(page: Path) -> None:
    text = page.read_text()
    names = {p.name for p in tracked()}
    missing = []
    for token in sorted(named_paths(text)):
        if "<" in token or "*" in token or "{" in token:
            continue
        # A bare file name may sit in a folder the page is about; a path must exist as given.
        if "/" in token:
            if not (ROOT / token).exists():
                missing.append(token)
        elif token not in names and not (ROOT / token).exists():
            missing.append(token)
    for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if link.startswith(("http://", "https://")):
            continue
        if not (page.parent / link).exists():
            missing.append(link)
    assert missing == []


def test_benchmarks_page_is_generated_from_the_stored_results() -> None:
    from bench.docs import PAGE, render

    assert PAGE.read_text() == render(), "run python -m bench.docs"
