"""Layering contract (DESIGN.md "Layout", engine/__init__.py): engine/ never imports Qt, app or
editor_widgets; inside engine, imports only run downwards through the rooms; editor_widgets/ never
imports app/."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QT = ("PySide6", "PyQt5", "PyQt6", "PySide2", "qtpy", "qtawesome", "pytestqt")
# The engine's rooms, bottom first: a module may import its own room and the rooms below it.
ROOMS = ("foundation", "codec", "synthesis", "analysis", "studio", "evaluation", "training", "benchmarks", "cli")
FOUNDATION = ("engine", "engine.errors", "engine.fileio", "engine.workers")


def imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level and path.parent.name == "editor_widgets" and node.level > 1:
                yield "app" if (node.module or "").startswith("app") else (node.module or "")
            elif not node.level:
                yield node.module or ""


def offenders(folder: str, banned):
    out = []
    for p in sorted((ROOT / folder).rglob("*.py")):
        for name in imports(p):
            if name.split(".")[0] in banned:
                out.append(f"{p.relative_to(ROOT)} imports {name}")
    return out


def room(module: str) -> str:
    if module in FOUNDATION:
        return "foundation"
    part = module.split(".")[1]
    if part not in ROOMS:
        raise AssertionError(f"{module} is in no room of {ROOMS}: file it under one (and in this test)")
    return part


def engine_graph() -> dict[str, set[str]]:
    """module -> engine modules it imports (any depth of function-level imports included)."""
    graph = {}
    for p in sorted((ROOT / "engine").rglob("*.py")):
        rel = p.relative_to(ROOT).with_suffix("")
        mod = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        graph[mod] = {n for n in imports(p) if n == "engine" or n.startswith("engine.")}
    return graph


def arrows_up(graph) -> list[str]:
    up = []
    for mod, deps in graph.items():
        for dep in deps:
            if ROOMS.index(room(dep)) > ROOMS.index(room(mod)):
                up.append(f"{mod} ({room(mod)}) imports {dep} ({room(dep)})")
    return sorted(up)


def test_engine_never_imports_qt_app_or_widgets():
    assert offenders("engine", QT + ("app", "editor_widgets")) == []


def test_engine_imports_only_run_downwards():
    graph = engine_graph()
    assert len(graph) > 40 and {room(m) for m in graph} == set(ROOMS)
    assert arrows_up(graph) == []


def test_graph_checker_sees_an_arrow_up():
    assert arrows_up({"engine.codec.container": {"engine.synthesis.decoder"},
                      "engine.cli.decode": {"engine.codec.container"}}) == [
        "engine.codec.container (codec) imports engine.synthesis.decoder (synthesis)"]


def test_editor_widgets_never_import_app():
    assert offenders("editor_widgets", ("app",)) == []


def test_scanner_sees_imports(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("import PySide6.QtCore\nfrom app.x import y\n")
    assert list(imports(p)) == ["PySide6.QtCore", "app.x"]
