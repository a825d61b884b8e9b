"""The house rules, checked on the source: packages import one way, nothing reaches into another
module's private names, modules stay small, and the package layering of the README holds.

Reads the code with ``ast`` (nothing is imported), so the test is fast and sees lazy imports inside
functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dse", "objectives", "search_spaces")
MAX_LINES = 500  # hard limit; modules over ~400 lines say why at their top

#: Layers of the house, lowest first. A module may import modules of its own layer or of lower
#: layers, never of a higher one (the README's layout section lists the same).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("dse.errors", "dse.io", "dse.version"),
    ("dse.data", "dse.compress"),
    ("dse.models",),
    ("dse.profile", "dse.robust", "dse.recipe", "dse.training", "dse.checkpoint", "dse.onnx_io"),
    ("objectives",),
    ("search_spaces", "dse.candidate", "dse.epoch_eval", "dse.pipeline", "dse.deploy"),
    ("dse.study",),
    ("dse.report",),
    ("dse.cli", "dse.api", "dse.__main__", "dse"),
)


def _modules(root: Path = ROOT) -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in (root / pkg).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in modules:
            return candidate
    return None


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[str]]:
    """Module -> modules it imports (anywhere in its body), and the cross-module private imports."""
    modules = _modules(root)
    edges: dict[str, set[str]] = {m: set() for m in modules}
    private: list[str] = []
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _resolve(alias.name, modules)
                    if target and target != mod:
                        edges[mod].add(target)
            elif isinstance(node, ast.ImportFrom):
                anchor = base[: len(base) - node.level + 1] if node.level else []
                full = ".".join(anchor + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = _resolve(f"{full}.{alias.name}", modules)
                    target = sub if sub and sub.endswith("." + alias.name) else _resolve(full, modules)
                    if not target or target == mod:
                        continue
                    edges[mod].add(target)
                    other_top = target.split(".")[0] != mod.split(".")[0]
                    private_module = any(p.startswith("_") and not p.startswith("__") for p in target.split("."))
                    own_package = target.startswith(mod + ".") and is_pkg  # an __init__ re-exporting its own parts
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append(f"{mod} imports {target}.{alias.name}")
                    elif private_module and (other_top or not (own_package or _same_parent(mod, target))):
                        private.append(f"{mod} imports private module {target}")
    return edges, private


def _same_parent(mod: str, target: str) -> bool:
    """A private module may be used by its siblings and its package."""
    parent = target.rsplit(".", 1)[0]
    return mod == parent or mod.rsplit(".", 1)[0] == parent


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), minus a package ``__init__``
    that only re-exports its own submodules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)

    def benign(comp: list[str]) -> bool:
        heads = [m for m in comp if all(o == m or o.startswith(m + ".") for o in comp)]
        return bool(heads)

    return [c for c in out if not benign(c)]


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    return best


# ------------------------------------------------------------------------------------------ tests


def test_no_import_cycles():
    edges, _ = import_graph()
    assert find_cycles(edges) == []


def test_no_cross_module_private_imports():
    _, private = import_graph()
    assert private == []


def test_layers_import_downwards_only():
    edges, _ = import_graph()
    upward = [
        f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
        for m, targets in edges.items()
        for t in targets
        if layer_of(t) > layer_of(m) and not t.startswith(m + ".")
    ]
    assert upward == []


def test_every_module_has_a_layer():
    assert [m for m in _modules() if layer_of(m) < 0] == []


def test_modules_stay_small():
    too_big = []
    for mod, path in _modules().items():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_LINES:
            too_big.append(f"{mod}: {len(lines)} lines")
        elif len(lines) > 400:
            head = "\n".join(lines[:25]).lower()
            if "lines" not in head and "long" not in head:
                too_big.append(f"{mod}: {len(lines)} lines and no reason at its top")
    assert too_big == []


# -------------------------------------------------- the checker itself, on a synthetic house


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_finds_a_lazy_cycle_and_a_private_import(tmp_path):
    _write(
        tmp_path,
        {
            "dse/__init__.py": "",
            "dse/a.py": "from dse.b import thing\n",
            "dse/b.py": "def f():\n    from dse.a import _hidden\n",
            "objectives/__init__.py": "from dse.c import x\n",
            "search_spaces/__init__.py": "from dse._p import y\n",
            "dse/c.py": "",
            "dse/_p.py": "",
        },
    )
    edges, private = import_graph(tmp_path)
    assert find_cycles(edges) == [["dse.a", "dse.b"]]
    assert "dse.b imports dse.a._hidden" in private
    assert "search_spaces imports private module dse._p" in private
    assert not any("objectives" in p for p in private)


def test_checker_accepts_a_package_reexporting_its_parts(tmp_path):
    _write(
        tmp_path,
        {
            "dse/__init__.py": "",
            "dse/models/__init__.py": "from dse.models._net import Net\n",
            "dse/models/_net.py": "from dse.models._layers import L\n",
            "dse/models/_layers.py": "",
            "search_spaces/__init__.py": "",
            "objectives/__init__.py": "",
        },
    )
    edges, private = import_graph(tmp_path)
    assert find_cycles(edges) == []
    assert private == []


@pytest.mark.parametrize("module,layer", [("dse.errors", 0), ("dse.robust.attacks", 3), ("dse.study.runner", 6), ("dse", 8)])
def test_layer_lookup(module, layer):
    assert layer_of(module) == layer
