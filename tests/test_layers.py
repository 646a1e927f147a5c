"""The pack's modules import one another without cycles, at module level and inside
functions alike; imports under ``if TYPE_CHECKING:`` (annotations only) do not count."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "qwen_image_dashscope"
OUTSIDE = {"tests", "benchmarks", "build", "docs", "web", "locales", "example_workflows"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in REPO.rglob("*.py"):
        parts = path.relative_to(REPO).parts
        if OUTSIDE & set(parts) or any(part.startswith(".") for part in parts):
            continue
        names = list(path.relative_to(REPO).with_suffix("").parts)
        if names[-1] == "__init__":
            names.pop()
        found[".".join([PACKAGE, *names])] = path
    return found


def _runtime_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for_annotations = {id(inner) for node in ast.walk(tree)
                       if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                       for inner in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    imported = set()
    for node in ast.walk(tree):
        if id(node) in for_annotations or not isinstance(node, ast.ImportFrom):
            continue
        base = package.split(".")[: len(package.split(".")) - max(0, node.level - 1)]
        target = ".".join(base + [node.module] if node.module else base) if node.level \
            else node.module or ""
        submodules = {f"{target}.{alias.name}" for alias in node.names} & set(modules)
        imported |= submodules or ({target} & set(modules))
    return imported - {name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    modules = _modules()
    assert f"{PACKAGE}.api.client" in modules and f"{PACKAGE}.nodes.runner" in modules
    graph = {name: _runtime_imports(name, path, modules) for name, path in modules.items()}
    assert f"{PACKAGE}.api.catalog.specs" in graph[f"{PACKAGE}.api.catalog.table"]
    assert _cycles(graph) == []


def test_the_check_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
