"""``python -m app.screenshot [OUT.png] [--compare MODE]``: open the sample, make an edit, wait for the
preview and the 3D view, and save a picture of the whole window (docs/screenshot.png); ``--compare``
picks the preview's compare mode (side, wipe, diff, invented; default side). Run under a display or Xvfb:

    xvfb-run -s "-screen 0 1600x1000x24" .venv/bin/python -m app.screenshot docs/screenshot.png
"""
from __future__ import annotations

import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m app.screenshot")
    ap.add_argument("out", nargs="?", default="docs/screenshot.png")
    ap.add_argument("--compare", default="side")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    from .cli_studio import DEFAULT_FILE, create_app
    app = create_app()
    from PySide6.QtWidgets import QApplication

    from .main_window import MainWindow
    from .preferences import Preferences
    win = MainWindow(Preferences(device="cpu", compare_mode=args.compare))
    win.resize(1580, 960)
    win.show()
    if not win.open_path(DEFAULT_FILE):
        return 1
    ad = win.adapter
    # The sample opens with her arms at her sides: raise her left arm over frames 0-12 (full from the
    # first frame, eased out inside the range) and turn her head a little; show frame 4.
    win.timeline.set_selection(0, 12)
    ad.set_range(ad.doc.index("head.y"), 0, 12, offset=0.3, ease_out=5)
    ad.set_range(ad.doc.index("left_shoulder.z"), 0, 12, offset=0.7, ease_out=5)
    win.curve_view.set_index(ad.doc.index("left_shoulder.z"))      # the curve of the edited semantic
    f = 4
    ad.set_frame(f)

    def wait(cond, seconds):
        t = time.time()
        while not cond() and time.time() - t < seconds:
            QApplication.processEvents()
            time.sleep(0.02)
    wait(lambda: win.preview_pane.frame == f and win.viewport.image is not None
         and win.mesh.last is not None and win.mesh.last[0] == f, 180)
    wait(lambda: False, 1.0)
    out.parent.mkdir(parents=True, exist_ok=True)
    win.grab().save(str(out))
    print(f"wrote {out}")
    ad.doc.mark_saved(ad.doc.path)   # no unsaved-changes prompt on exit
    ad.untitled = False
    win.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
