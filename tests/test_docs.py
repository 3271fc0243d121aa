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
