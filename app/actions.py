"""The studio's QActions (menus and toolbar share them), with qtawesome icons and shortcuts."""
from __future__ import annotations

from PySide6.QtGui import QAction, QKeySequence

try:
    import qtawesome as qta
except Exception:  # pragma: no cover
    qta = None

# name -> (text, icon, shortcut, tip)
SPECS = {
    "open": ("&Open bitstream…", "mdi6.folder-open", QKeySequence.StandardKey.Open, "Open an .ihvc bitstream"),
    "open_video": ("Open &video…", "mdi6.video-plus", "Ctrl+Shift+O", "Encode a video into a new bitstream"),
    "save": ("&Save", "mdi6.content-save", QKeySequence.StandardKey.Save, "Save the edited bitstream"),
    "save_as": ("Save &As…", "mdi6.content-save-edit", QKeySequence.StandardKey.SaveAs, "Save under a new name"),
    "export_video": ("Export &video (mp4)…", "mdi6.movie-open-outline", "Ctrl+E", "Decode all edited frames to a video"),
    "export_json": ("Export semantics (&JSON)…", "mdi6.code-json", None, "Per-frame semantics as JSON"),
    "export_csv": ("Export semantics (&CSV)…", "mdi6.table-arrow-right", None, "Per-frame semantics as CSV"),
    "export_mesh": ("Export &mesh (OBJ/PLY)…", "mdi6.cube-outline", None, "Body mesh of the current frame"),
    "apply_edits": ("Apply edit &list…", "mdi6.file-document-edit", None, "Apply a JSON edit list (as the CLI does)"),
    "save_edits": ("Save edit l&ist…", "mdi6.file-document-arrow-right", None,
                   "Save the edits made so far as a JSON edit list (replay with: main.py edit)"),
    "quit": ("&Quit", "mdi6.exit-to-app", QKeySequence.StandardKey.Quit, "Quit"),
    "revert_frame": ("Re&vert frame", "mdi6.backup-restore", "Ctrl+R", "Restore the decoded original (frame or range)"),
    "range_edit": ("&Range edit…", "mdi6.chart-bell-curve-cumulative", "Ctrl+Shift+R", "Offset or set a semantic over a range with easing"),
    "mirror": ("&Mirror left/right", "mdi6.flip-horizontal", "Ctrl+M", "Mirror the pose (frame or range)"),
    "copy_pose": ("&Copy pose", "mdi6.content-copy", QKeySequence.StandardKey.Copy, "Copy this frame's semantics"),
    "paste_pose": ("&Paste pose", "mdi6.content-paste", QKeySequence.StandardKey.Paste, "Paste the copied pose (frame or range)"),
    "preferences": ("Pre&ferences…", "mdi6.cog", QKeySequence.StandardKey.Preferences, "Device, decoder, preview size"),
    "play": ("&Play / pause", "mdi6.play-pause", "Space", "Play at the file's frame rate"),
    "prev_frame": ("Previous frame", "mdi6.skip-previous", "Left", "Previous frame"),
    "next_frame": ("Next frame", "mdi6.skip-next", "Right", "Next frame"),
    "toggle_ghost": ("Show &ghost", "mdi6.ghost-outline", "G", "Show the decoded original pose as a ghost"),
}


def make_actions(parent) -> dict[str, QAction]:
    out = {}
    for name, (text, icon, shortcut, tip) in SPECS.items():
        a = QAction(text, parent)
        if qta is not None and icon:
            try:
                a.setIcon(qta.icon(icon))
            except Exception:
                pass
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        a.setStatusTip(tip)
        a.setToolTip(tip)
        out[name] = a
    out["toggle_ghost"].setCheckable(True)
    out["toggle_ghost"].setChecked(True)
    return out


def undo_redo_actions(stack, parent):
    undo = stack.createUndoAction(parent, "&Undo")
    redo = stack.createRedoAction(parent, "&Redo")
    undo.setShortcut(QKeySequence.StandardKey.Undo)
    redo.setShortcut(QKeySequence.StandardKey.Redo)
    if qta is not None:
        undo.setIcon(qta.icon("mdi6.undo"))
        redo.setIcon(qta.icon("mdi6.redo"))
    return undo, redo
