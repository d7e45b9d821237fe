"""The studio's QActions (menus and toolbar share them), with qtawesome icons and shortcuts.

Edit actions (DOCUMENT_ACTIONS) act on the document whatever widget has the keyboard focus:
``EditKeyRouter`` stops text fields (spin boxes, the frame box) from claiming their keys, and
text fields keep every other key (typing, cursor movement, selection).
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QWidget

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
    "export_video": ("Export &video (mp4)…", "mdi6.movie-open-outline", "Ctrl+E",
                     "Decode all edited frames to an H.264 MP4 that common players open"),
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
    "guide": ("Quick &guide", "mdi6.help-circle-outline", QKeySequence.StandardKey.HelpContents,
              "Keys, what each value means, units (F1)"),
    "about": ("&About IHVC Studio", "mdi6.information-outline", None, "Version and licences"),
}

# Keys of these act on the document even when a text field has the focus.
DOCUMENT_ACTIONS = ("undo", "redo", "copy_pose", "paste_pose", "mirror", "revert_frame")


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
    undo.setShortcuts(_unique(QKeySequence.keyBindings(QKeySequence.StandardKey.Undo) + [QKeySequence("Ctrl+Z")]))
    # Both redo conventions everywhere (Ctrl+Shift+Z and Ctrl+Y): one QKeySequence each, no duplicates
    # (a key bound twice to one action is ambiguous and fires nothing).
    redo.setShortcuts(_unique(QKeySequence.keyBindings(QKeySequence.StandardKey.Redo)
                              + [QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")]))
    if qta is not None:
        undo.setIcon(qta.icon("mdi6.undo"))
        redo.setIcon(qta.icon("mdi6.redo"))
    return undo, redo


def _unique(seqs) -> list[QKeySequence]:
    out, seen = [], set()
    for q in seqs:
        key = q.toString(QKeySequence.SequenceFormat.PortableText)
        if key and key not in seen:
            seen.add(key)
            out.append(q)
    return out


class EditKeyRouter(QObject):
    """Application event filter: the keys of ``actions`` reach those actions from any widget of ``window``.

    A focused QLineEdit / QSpinBox claims Ctrl+Z, Ctrl+Y, Ctrl+C, Ctrl+V... for its own text
    (a ShortcutOverride it accepts); refusing that override lets the window's action fire.
    A key press of those keys that still reaches a widget (the action is disabled, e.g. nothing to
    undo) is dropped, so a text field never acts on them. Other windows (dialogs) are left alone.
    """

    def __init__(self, window: QWidget, actions):
        super().__init__(window)
        self.window = window
        self.actions = list(actions)

    def _matches(self, event) -> bool:
        seq = QKeySequence(event.keyCombination())
        for a in self.actions:
            for s in a.shortcuts():
                if s.matches(seq) == QKeySequence.SequenceMatch.ExactMatch:
                    return True
        return False

    def eventFilter(self, obj, event) -> bool:
        t = event.type()
        if t not in (QEvent.Type.ShortcutOverride, QEvent.Type.KeyPress):
            return False
        if not isinstance(obj, QWidget) or obj.window() is not self.window or not self._matches(event):
            return False
        event.ignore()          # ShortcutOverride refused: the shortcut (the action) takes the key
        return True
