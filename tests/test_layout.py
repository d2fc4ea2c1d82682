"""The package's shape, kept by an ast walk: no import loop, few flat modules, short functions and modules.

Every import counts, module-level and inside functions, package ``__init__`` files included; only the
top-level ``textvae/__init__.py`` is left out (``textvae.load`` imports the API lazily, by design).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "textvae"
MAX_FLAT_MODULES = 16  # modules directly in textvae/, __init__.py and __main__.py not counted
MAX_FUNCTION_LINES = 100
MAX_MODULE_LINES = 700


def _modules(package: Path) -> dict[str, Path]:
    """Dotted module name → file, for every .py file under ``package`` (a package is its ``__init__``)."""
    root = package.parent
    return {
        ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p for p in package.rglob("*.py")
    }


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module → the package modules it imports, anywhere in its body; ``from a import b`` counts
    ``a.b`` when that is a module, else ``a``. The top-level package's ``__init__`` is left out."""
    mods = _modules(package)

    def target(name: str) -> str:  # the longest module that ``name`` starts with
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    top = package.name
    edges: dict[str, set[str]] = {}
    for module, path in mods.items():
        if module == top:
            continue
        parts = (module if path.name == "__init__.py" else module.rpartition(".")[0]).split(".")
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join([*parts[: len(parts) - node.level + 1], node.module or ""]).strip(".")
                else:
                    base = node.module or ""
                found |= {target(f"{base}.{alias.name}") for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {target(alias.name) for alias in node.names}
        edges[module] = found - {"", module, top}
    return edges


def modules_on_a_loop(edges: dict[str, set[str]]) -> list[str]:
    """The modules from which an import path leads back to themselves."""

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    return sorted(m for m in edges if m in reach(m))


def long_functions(package: Path, limit: int) -> list[str]:
    """``file:function (lines)`` for every function or method longer than ``limit`` lines."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(package.parent)}:{node.name} ({lines} lines)")
    return found


def long_modules(package: Path, limit: int) -> list[str]:
    lengths = {p: len(p.read_text(encoding="utf-8").splitlines()) for p in sorted(package.rglob("*.py"))}
    return [f"{p.relative_to(package.parent)} ({n} lines)" for p, n in lengths.items() if n > limit]


def flat_modules(package: Path) -> list[str]:
    return sorted(p.name for p in package.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))


def test_no_module_is_on_an_import_loop():
    assert modules_on_a_loop(import_graph(PACKAGE)) == []


def test_few_modules_sit_directly_in_the_package():
    flat = flat_modules(PACKAGE)
    assert len(flat) <= MAX_FLAT_MODULES, f"{len(flat)} flat modules: {', '.join(flat)}"


def test_no_function_or_module_is_too_long():
    assert long_functions(PACKAGE, MAX_FUNCTION_LINES) == []
    assert long_modules(PACKAGE, MAX_MODULE_LINES) == []


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


def test_the_walk_finds_a_loop_closed_inside_a_function(tmp_path):
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg import a\n",  # the top-level __init__ is left out
            "pkg/a.py": "from pkg.sub import b\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/b.py": "def f():\n    from .. import c\n",
            "pkg/c.py": "def g():\n    import pkg.a\n",
            "pkg/d.py": "from pkg import a\n",  # imports the loop, is not on it
        },
    )
    edges = import_graph(package)
    assert edges["pkg.sub.b"] == {"pkg.c"}  # a relative import inside a function
    assert modules_on_a_loop(edges) == ["pkg.a", "pkg.c", "pkg.sub.b"]


def test_a_package_init_closes_a_loop(tmp_path):
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "from pkg.sub.x import X\n",
            "pkg/sub/x.py": "from pkg import y\nX = 1\n",
            "pkg/y.py": "from pkg.sub import X\n",  # names a package: its __init__ imports x
        },
    )
    assert modules_on_a_loop(import_graph(package)) == ["pkg.sub", "pkg.sub.x", "pkg.y"]


def test_the_size_limits_can_fail(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(120))
    package = _write(tmp_path, {"pkg/__init__.py": "", "pkg/long.py": f"def f():\n{body}\n" + "y = 1\n" * 600})
    assert long_functions(package, MAX_FUNCTION_LINES) == ["pkg/long.py:f (121 lines)"]
    assert long_modules(package, MAX_MODULE_LINES) == ["pkg/long.py (722 lines)"]
    assert flat_modules(package) == ["long.py"]


@pytest.mark.parametrize("limit", [MAX_FLAT_MODULES])
def test_the_flat_count_leaves_out_init_and_main(tmp_path, limit):
    names = {f"pkg/m{i}.py": "" for i in range(limit + 1)} | {"pkg/__init__.py": "", "pkg/__main__.py": ""}
    assert len(flat_modules(_write(tmp_path, names))) == limit + 1


def test_the_built_in_component_list_is_complete():
    # every module that registers a component is imported by textvae.components (the registry imports none)
    import subprocess
    import sys

    registering = sorted(
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for path in PACKAGE.rglob("*.py")
        if "\n@register(" in path.read_text(encoding="utf-8")
    )
    assert "textvae.models.vae" in registering and "textvae.strategies" in registering
    script = "import sys, textvae.components; print('\\n'.join(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    loaded = run.stdout.split()
    assert [m for m in registering if m not in loaded] == []
