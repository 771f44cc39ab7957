"""The layering, read from the source with ast (nothing is imported): pages and API are siblings,
no import circle under app/ and worker/, the domain package stays pure, the training code needs
only the domain package from app/."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "worker")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(body: list[ast.stmt], *, module_level_only: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements in these statements: all of them, or only those run when the module is
    imported (not in functions, not under `if TYPE_CHECKING:`)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not module_level_only:
                yield from _import_nodes(node.body, module_level_only=False)
        elif isinstance(node, ast.If) and _is_type_checking(node):
            if not module_level_only:
                yield from _import_nodes(node.body, module_level_only=False)
            yield from _import_nodes(node.orelse, module_level_only=module_level_only)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    stmts = [c for c in children if isinstance(c, ast.stmt)]
                    for c in children:  # except handlers and match cases hold statements in their own body
                        if isinstance(c, (ast.ExceptHandler, ast.match_case)):
                            stmts.extend(c.body)
                    yield from _import_nodes(stmts, module_level_only=module_level_only)


def imports_of(module: str, *, module_level_only: bool = False) -> set[str]:
    """The modules (or packages) this module imports, resolved: `from app.services import jobs` is
    app.services.jobs when that is a module, else app.services."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path)).body, module_level_only=module_level_only):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        for alias in node.names:
            candidate = f"{target}.{alias.name}"
            found.add(candidate if candidate in MODULES else target)
    return found


def _under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_import_reader_sees_module_and_function_imports():
    assert "app.http.deps" in imports_of("app.api.common")
    assert "app.services.prompt_preview" in imports_of("app.api.jobs")  # imported inside a function
    assert "app.services.prompt_preview" not in imports_of("app.api.jobs", module_level_only=True)


def test_api_and_pages_do_not_import_each_other():
    crossings = [
        f"{m} imports {i}"
        for m in MODULES
        for i in imports_of(m)
        if (_under(m, "app.api") and _under(i, "app.web")) or (_under(m, "app.web") and _under(i, "app.api"))
    ]
    assert crossings == []


def test_the_http_layer_imports_neither_pages_nor_api():
    found = [
        f"{m} imports {i}"
        for m in MODULES
        if _under(m, "app.http")
        for i in imports_of(m)
        if _under(i, "app.web", "app.api", "jinja2", "fastapi.templating")
    ]
    assert found == []


def import_cycles() -> list[list[str]]:
    """Every circle of module-level imports among app/ and worker/ modules (each found once, from its smallest name)."""
    graph = {m: sorted(i for i in imports_of(m, module_level_only=True) if i in MODULES and i != m) for m in MODULES}
    cycles: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()

    def walk(start: str, node: str, path: list[str], on_path: set[str]) -> None:
        for nxt in graph[node]:
            if nxt == start:
                cycle = tuple(path)
                if min(cycle) == start and cycle not in seen:
                    seen.add(cycle)
                    cycles.append([*path, start])
            elif nxt not in on_path and nxt > start:
                walk(start, nxt, [*path, nxt], on_path | {nxt})

    for module in sorted(graph):
        walk(module, module, [module], {module})
    return cycles


def test_the_cycle_finder_finds_a_circle(monkeypatch):
    fake = {"a.x": ["a.y"], "a.y": ["a.z"], "a.z": ["a.x"], "a.w": ["a.x"]}
    monkeypatch.setattr(__import__(__name__, fromlist=["MODULES"]), "MODULES", dict.fromkeys(fake, ROOT))
    monkeypatch.setattr(__import__(__name__, fromlist=["imports_of"]), "imports_of", lambda m, module_level_only=False: set(fake[m]))
    assert import_cycles() == [["a.x", "a.y", "a.z", "a.x"]]


def test_no_import_cycles_under_app_and_worker():
    assert [" -> ".join(c) for c in import_cycles()] == []


def test_the_domain_package_imports_no_outer_layer():
    found = [
        f"{m} imports {i}"
        for m in MODULES
        if _under(m, "app.domain")
        for i in imports_of(m)
        if _under(i, "app.services", "app.web", "app.api", "app.http", "worker", "torch")
    ]
    assert found == []


def test_training_code_imports_only_the_domain_package_from_app():
    found = [
        f"{m} imports {i}"
        for m in MODULES
        if _under(m, "worker.training")
        for i in imports_of(m)
        if _under(i, "app") and not _under(i, "app.domain")
    ]
    assert found == []


def test_the_api_loads_without_jinja():
    """Importing the datasets API (in a fresh interpreter) loads no template engine and registers no filter."""
    import subprocess
    import sys

    code = (
        "import sys, app.api.datasets; bad = [m for m in sys.modules if m.startswith(('jinja2', 'app.web'))]; "
        "print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_openai_endpoint_is_a_sibling_of_pages_and_api():
    """app/openai_api (/v1) imports http and services; it and the pages / management API never import each other."""
    found = [
        f"{m} imports {i}"
        for m in MODULES
        for i in imports_of(m)
        if (_under(m, "app.openai_api") and _under(i, "app.web", "app.api", "jinja2", "fastapi.templating"))
        or (_under(m, "app.web", "app.api", "app.http", "app.services") and _under(i, "app.openai_api"))
    ]
    assert found == []
