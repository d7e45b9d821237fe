"""Layering contract (DESIGN.md): engine/ never imports Qt; editor_widgets/ never imports app/."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QT = ("PySide6", "PyQt5", "PyQt6", "PySide2", "qtpy", "qtawesome", "pytestqt")


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


def test_engine_never_imports_qt():
    assert offenders("engine", QT) == []


def test_editor_widgets_never_import_app():
    assert offenders("editor_widgets", ("app",)) == []


def test_scanner_sees_imports(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("import PySide6.QtCore\nfrom app.x import y\n")
    assert list(imports(p)) == ["PySide6.QtCore", "app.x"]
