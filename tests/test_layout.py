"""The package layout's rules, read from the source with ``ast`` (nothing is imported):

- no import cycle between talkface's modules, counting function-local imports and the package
  ``__init__`` that importing a submodule runs;
- talkface's own modules are imported at the top of the file, except in the CLI layer, which imports
  a stage only inside the command that runs it (so ``talkface --help`` stays light);
- a module over ~400 lines says why at its top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "talkface"
CLI_PACKAGE = "talkface.cli"
MAX_LINES = 400
SIZE_REASON = "Over 400 lines:"  # the phrase a longer module's docstring uses to say why


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes inside top-level ``if TYPE_CHECKING:`` blocks (never executed)."""
    ids: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids.update(id(n) for n in ast.walk(node))
    return ids


def imports_of(name: str, path: Path) -> list[tuple[str, list[str], bool]]:
    """(imported module, names, at module level) for each executed import statement in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_nodes(tree)
    top = {id(n) for n in tree.body}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, [], id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.append((base, [a.name for a in node.names], id(node) in top))
    return found


def _inside(importer: str, package: str) -> bool:
    return importer == package or importer.startswith(package + ".")


def dependency_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the talkface modules that importing it runs.

    ``from P import x`` depends on ``P.x`` when that is a module, else on ``P``'s ``__init__``; importing
    ``P.x`` from outside ``P`` also runs ``P``'s ``__init__`` (and its parents'), so that is an edge too;
    from inside ``P`` it does not (``P`` is already being imported).
    """
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for module, names, _ in imports_of(name, path):
            if not _inside(module, "talkface"):
                continue
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
            if len(targets) < len(names) or not names:
                targets.append(module)
            for target in targets:
                if target in modules and target != name:
                    edges.add(target)
                parts = target.split(".")
                for i in range(1, len(parts)):
                    ancestor = ".".join(parts[:i])
                    if ancestor in modules and not _inside(name, ancestor):
                        edges.add(ancestor)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(dependency_graph(all_modules()))
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_cycle_finder_sees_cycles_through_function_local_imports(tmp_path):
    # the oracle: a two-module cycle hidden in a function body, and a submodule that imports its own
    # package's __init__ (which imports it back)
    pkg = tmp_path / "talkface"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from talkface.b import g\n")
    (pkg / "b.py").write_text("from talkface.a import f\n")
    (pkg / "sub" / "__init__.py").write_text("from talkface.sub.x import y\n")
    (pkg / "sub" / "x.py").write_text("from talkface.sub import z\ny = 1\n")
    global ROOT
    saved, ROOT = ROOT, pkg
    try:
        graph = dependency_graph(all_modules())
    finally:
        ROOT = saved
    assert find_cycle({k: graph[k] for k in ("talkface.a", "talkface.b")}) == ["talkface.a", "talkface.b", "talkface.a"]
    assert find_cycle({k: graph[k] for k in ("talkface.sub", "talkface.sub.x")}) is not None
    assert find_cycle({"talkface.a": set(), "talkface.b": {"talkface.a"}}) is None


def test_talkface_imports_at_the_top_outside_the_cli():
    local = []
    for name, path in all_modules().items():
        if _inside(name, CLI_PACKAGE):
            continue
        for module, _, at_top in imports_of(name, path):
            if _inside(module, "talkface") and not at_top:
                local.append(f"{name}: {module}")
    assert not local, "function-local imports of talkface modules: " + ", ".join(local)


@pytest.mark.parametrize("name", sorted(all_modules()))
def test_long_modules_say_why(name):
    path = all_modules()[name]
    text = path.read_text()
    if text.count("\n") > MAX_LINES:
        docstring = ast.get_docstring(ast.parse(text)) or ""
        assert SIZE_REASON in docstring, f"{path} has {text.count(chr(10))} lines; say why at its top ({SIZE_REASON!r})"
