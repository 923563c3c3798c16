"""The documentation's links, anchors and citations point at things that exist, and the README
stays a short entry point."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md",
         *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in page.read_text().splitlines()
            if line.startswith("#")}


def test_every_relative_link_and_anchor_exists():
    broken = []
    for page in (p for p in PAGES if p.exists()):
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_is_a_short_entry_point():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    text = "\n".join(lines)
    assert "make demo" in text and "make test" in text
    for config in re.findall(r"configs/[\w-]+\.toml", text):
        assert (ROOT / config).exists(), config


def test_configs_cite_sections_that_exist():
    results = {line.lstrip("# ").strip() for line in
               (ROOT / "docs" / "results.md").read_text().splitlines() if line.startswith("#")}
    for config in sorted((ROOT / "configs").glob("*.toml")):
        text = " ".join(line.lstrip("# ") for line in config.read_text().splitlines()
                        if line.startswith("#"))
        for cited in re.findall(r'docs/results\.md, "([^"]+)"', text):
            assert any(h.startswith(cited) for h in results), f"{config.name}: {cited!r}"
        assert "README," not in text, f"{config.name} cites a README section"
