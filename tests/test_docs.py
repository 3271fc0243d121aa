"""The Python examples in the README and the guide run as written."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    "README.md",
    "docs/getting-started.md",
    "docs/pruning-graph.md",
    "docs/measurement.md",
    "docs/methods/structured.md",
    "docs/methods/unstructured.md",
    "docs/methods/quantization.md",
    "docs/methods/distillation.md",
    "docs/methods/automatic.md",
    "docs/deploy.md",
    "docs/compress.md",
    "docs/recipes.md",
    "docs/bench.md",
]


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_python_examples_run(page, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)
    assert blocks, f"{page} has no Python example"
    namespace: dict = {}
    for block in blocks:  # later blocks build on earlier ones, as a reader's session does
        exec(compile(block, page, "exec"), namespace)
    assert capsys.readouterr().out.strip()


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces
    to hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"(?m)^#+ (.+)$", text)
    }


def test_every_relative_link_in_the_docs_resolves():
    """Links between pages (and into headings) land somewhere: a split or renamed page
    that leaves a reader at a dead link fails here."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            where = (page.parent / path).resolve() if path else page
            if not where.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and where.suffix == ".md" and anchor not in _anchors(where):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
