"""``python main.py [studio] [FILE]``: open IHVC Studio (default file: assets/sample.ihvc)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "assets" / "sample.ihvc"


def add_arguments(p):
    p.add_argument("file", nargs="?", default=str(DEFAULT_FILE), help="bitstream to open (default: assets/sample.ihvc)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="decoder device (overrides preferences)")


def create_app():
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("IHVC Studio")
    app.setOrganizationName("IHVC")
    return app


def run(args) -> int:
    if (sys.platform.startswith("linux") and not os.environ.get("DISPLAY")
            and not os.environ.get("WAYLAND_DISPLAY") and not os.environ.get("QT_QPA_PLATFORM")):
        from engine.errors import IHVCError
        raise IHVCError("no display to open the studio on (set DISPLAY, or run it under xvfb-run)")
    app = create_app()
    from .main_window import MainWindow
    from .preferences import Preferences
    prefs = Preferences.load()
    if getattr(args, "device", None):
        prefs.device = args.device
    win = MainWindow(prefs)
    win.show()
    if args.file:
        win.open_path(args.file)
    return app.exec()
