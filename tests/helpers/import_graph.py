"""The package's own imports, read from the source (nothing is imported): which module imports which,
where, and whether the import sits inside a function. ``python -m tests.helpers.import_graph`` prints
the counts the layout tests check: modules per folder, import cycles, function-local imports."""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "lightning_cifar"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE


@dataclass(frozen=True)
class OwnImport:
    importer: str  # dotted module name
    imported: str
    line: int
    local: bool  # inside a function
    commented: bool  # a comment on the import's line says why


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module ``name`` names, or the module that holds it (``pkg.mod.func`` -> ``pkg.mod``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def own_imports() -> list[OwnImport]:
    known = modules()
    found = []
    for name, path in known.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        local_nodes = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                if not target.startswith(PACKAGE):
                    continue
                resolved = _resolve(target, known)
                if resolved is None or resolved == name:
                    continue
                found.append(OwnImport(name, resolved, node.lineno, id(node) in local_nodes,
                                       "#" in lines[node.end_lineno - 1]))
    return found


def cycles(imports: list[OwnImport]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.importer, set()).add(imp.imported)
        graph.setdefault(imp.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def main() -> None:
    known = modules()
    imports = own_imports()
    folders = Counter(str(p.parent.relative_to(ROOT.parent)) for p in known.values())
    lines = Counter()
    for p in known.values():
        lines[str(p.parent.relative_to(ROOT.parent))] += len(p.read_text().splitlines())
    for folder in sorted(folders):
        print(f"{folder:<36} {folders[folder]:>3} modules {lines[folder]:>6} lines")
    local = [i for i in imports if i.local]
    print(f"import cycles: {len(cycles(imports))}")
    print(f"imports of our own modules: {len(imports)}, inside functions: {len(local)}"
          f" (each with a comment saying why: {sum(i.commented for i in local)})")
    for imp in local:
        print(f"  {imp.importer}:{imp.line} -> {imp.imported}")


if __name__ == "__main__":
    main()
