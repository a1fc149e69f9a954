"""The README's Python API stays true: every name its Python snippets import from talkface exists there."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_imports() -> list[tuple[str, str]]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    found = []
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("talkface"):
                found += [(node.module, alias.name) for alias in node.names]
    return found


def test_readme_has_a_python_api_snippet():
    assert readme_imports(), "README.md has no ```python block importing talkface"


def test_readme_imports_resolve():
    missing = [f"{module}.{name}" for module, name in readme_imports()
               if not hasattr(importlib.import_module(module), name)]
    assert not missing, f"README.md imports names that do not exist: {missing}"
