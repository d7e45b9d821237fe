"""``python main.py [studio] [FILE]``: open IHVC Studio (default file: assets/sample.ihvc).

FILE is a bitstream (.ihvc) or a video: a video is offered for encoding (in the background, with
progress and Cancel); declining opens the bundled sample instead. ``python main.py FILE`` is the
same as ``python main.py studio FILE``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "assets" / "sample.ihvc"


def add_arguments(p):
    p.add_argument("file", nargs="?", default=str(DEFAULT_FILE),
                   help="bitstream (.ihvc) or video to open (default: assets/sample.ihvc)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="decoder device (overrides preferences)")


def create_app():
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("IHVC Studio")
    app.setOrganizationName("IHVC")
    return app


def is_video(path) -> bool:
    return Path(path).suffix.lower() != ".ihvc"


def offer_encode(win, path) -> bool:
    """Ask whether to encode the video ``path``; encode it (background task) when the user agrees.
    Returns True when the encode was started."""
    from PySide6.QtWidgets import QMessageBox

    from . import file_ops
    answer = QMessageBox.question(
        win, "Encode video?",
        f"{Path(path).name} is a video. Encode it into an editable bitstream now? "
        "This runs in the background (about 45 seconds per 100 frames on a two-core CPU) "
        "and can be cancelled.",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes)
    if answer != QMessageBox.StandardButton.Yes:
        return False
    return file_ops.open_video(win, str(path)) is not None


def run(args) -> int:
    from engine.errors import InputError, IHVCError
    path = Path(args.file) if args.file else None
    if path is not None and not path.exists():
        raise InputError(f"no such file: {path}")
    if path is not None and path.is_dir():
        raise InputError(f"is a folder, not a bitstream or video: {path}")
    if (sys.platform.startswith("linux") and not os.environ.get("DISPLAY")
            and not os.environ.get("WAYLAND_DISPLAY") and not os.environ.get("QT_QPA_PLATFORM")):
        raise IHVCError("no display to open the studio on (set DISPLAY, or run it under xvfb-run)")
    app = create_app()
    from .main_window import MainWindow
    from .preferences import Preferences
    prefs = Preferences.load()
    if getattr(args, "device", None):
        prefs.device = args.device
    win = MainWindow(prefs)
    win.show()
    if path is not None:
        if is_video(path):
            if not offer_encode(win, path) and DEFAULT_FILE.exists():
                win.open_path(DEFAULT_FILE)
        else:
            win.open_path(path)
    return app.exec()
