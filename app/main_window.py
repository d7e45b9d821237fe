"""The studio's main window: wires widgets to the document adapter and to the engine services.

    SemanticPanel --valueEdited--> DocumentAdapter --(QUndoStack: ChangeCommand)--> engine Document
    Timeline      --frameChanged / rangeChanged--> DocumentAdapter (view state)
    Document events --> adapter signals --> panel (echo-free), timeline markers,
                                            PreviewService (decode off-thread) --> PreviewPane
                                            MeshService (body model off-thread) --> MeshViewport
"""
from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDockWidget, QFileDialog, QLabel, QMainWindow, QMessageBox, QProgressDialog, QSplitter, QVBoxLayout, QWidget,
)

from editor_widgets.binding import Connections
from editor_widgets.bitstream_panel import BitstreamPanel
from editor_widgets.curve_view import CurveView
from editor_widgets.mesh_viewport import MeshViewport
from editor_widgets.preview import PreviewPane
from editor_widgets.semantic_panel import SemanticPanel, panel_groups
from editor_widgets.timeline import Timeline
from engine.studio.document import Document
from engine.errors import IHVCError

from editor_widgets.units import FRAME_BASE_NOTE

from . import file_ops
from .actions import DOCUMENT_ACTIONS, EditKeyRouter, make_actions, undo_redo_actions
from .document_adapter import DocumentAdapter
from .preferences import Preferences, PreferencesDialog
from .services import MeshService, PreviewService

USER_ERRORS = (IHVCError, OSError, ValueError)
MESH_DRAG_INTERVAL = 0.5      # s between 3D body updates while a slider is dragged
MESHES_KEPT = 32        # posed bodies kept for the plausibility box check (about 80 kB each)


def documents_dir() -> Path:
    """The user's documents folder (QStandardPaths), else the home folder."""
    from PySide6.QtCore import QStandardPaths
    loc = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
    path = Path(loc) if loc else Path.home()
    return path if path.is_dir() else Path.home()


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in msg:
        msg = f"{msg}: {exc.filename}"
    return msg


class MainWindow(QMainWindow):
    def __init__(self, prefs: Preferences | None = None, decoder_factory=None, body_model_factory=None):
        super().__init__()
        self.prefs = prefs or Preferences.load()
        self.adapter = DocumentAdapter(self)
        self.preview = PreviewService(self.prefs, decoder_factory, self)
        self.mesh = MeshService(self.prefs, body_model_factory, self)
        self.errors: list[str] = []          # every error message shown (tests, logs)
        self._task = None
        self._mesh_wanted = None
        self._dragging = False               # a slider is held: previews are drafts until release
        self._mesh_at = 0.0                  # when the 3D body was last asked to follow (monotonic s)
        self._build_ui()
        self._wire()
        self._build_bitstream_panel()
        self._update_title()
        self._update_enabled()

    # --- construction --------------------------------------------------------------------------
    def _build_ui(self):
        self.resize(1560, 940)
        self.panel = SemanticPanel()
        self.preview_pane = PreviewPane()
        self.preview_pane.set_mode(self.prefs.compare_mode)
        self.viewport = MeshViewport()
        self.timeline = Timeline()
        vp = QWidget()
        vl = QVBoxLayout(vp)
        vl.setContentsMargins(0, 0, 0, 0)
        t = QLabel("3D body (ghost: decoded original)")
        t.setAlignment(Qt.AlignmentFlag.AlignCenter)
        t.setStyleSheet("font-weight: bold;")
        vl.addWidget(t)
        vl.addWidget(self.viewport, 1)
        views = QSplitter(Qt.Orientation.Horizontal)
        views.addWidget(self.preview_pane)
        views.addWidget(vp)
        views.setStretchFactor(0, 3)
        views.setStretchFactor(1, 1)
        views.setSizes([860, 330])
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        # The curve view shares the height with the picture views (drag the splitter to give it more).
        self.curve_view = CurveView()
        upper = QSplitter(Qt.Orientation.Vertical)
        upper.addWidget(views)
        upper.addWidget(self.curve_view)
        upper.setStretchFactor(0, 1)
        upper.setStretchFactor(1, 0)
        upper.setSizes([600, 210])
        rl.addWidget(upper, 1)
        rl.addWidget(self.timeline)
        central = QSplitter(Qt.Orientation.Horizontal)
        central.addWidget(self.panel)
        central.addWidget(right)
        central.setStretchFactor(0, 0)
        central.setStretchFactor(1, 1)
        central.setSizes([415, 1165])
        central.setContentsMargins(4, 4, 4, 4)
        self.setCentralWidget(central)
        self.status_label = QLabel("")
        self.status_label.setToolTip(f"Current frame, frame rate and frames with edits; {FRAME_BASE_NOTE}")
        self.statusBar().addPermanentWidget(self.status_label)

        a = self.actions = make_actions(self)
        a["undo"], a["redo"] = undo_redo_actions(self.adapter.undo_stack, self)
        menus = {
            "&File": ["open", "open_video", None, "save", "save_as", None, "export_video", "export_json",
                      "export_csv", "export_mesh", None, "apply_edits", "save_edits", None, "quit"],
            "&Edit": ["undo", "redo", None, "revert_frame", "range_edit", "mirror", "copy_pose", "paste_pose",
                      None, "preferences"],
            "&View": ["play", "prev_frame", "next_frame", None, "toggle_ghost"],
            "&Help": ["guide", None, "about"],
        }
        for title, names in menus.items():
            m = self.menuBar().addMenu(title)
            for n in names:
                m.addSeparator() if n is None else m.addAction(a[n])
        tb = self.addToolBar("Main")
        tb.setObjectName("main_toolbar")
        tb.setMovable(False)
        for n in ["open", "open_video", "save", None, "undo", "redo", "revert_frame", "range_edit", "mirror",
                  None, "export_video", "export_mesh", None, "preferences", "guide"]:
            tb.addSeparator() if n is None else tb.addAction(a[n])
        # Edit keys act on the document whatever widget has the focus (a value box keeps its typing).
        self.key_router = EditKeyRouter(self, [a[n] for n in DOCUMENT_ACTIONS])
        from PySide6.QtWidgets import QApplication
        QApplication.instance().installEventFilter(self.key_router)
        self.timeline.spin.setToolTip(f"Current frame; {FRAME_BASE_NOTE}")

    def _wire(self):
        a, ad = self.actions, self.adapter
        a["open"].triggered.connect(lambda: self.open_dialog())
        a["open_video"].triggered.connect(lambda: file_ops.open_video(self))
        a["save"].triggered.connect(lambda: self.save())
        a["save_as"].triggered.connect(lambda: self.save_as())
        a["export_video"].triggered.connect(lambda: file_ops.export_video(self))
        a["export_json"].triggered.connect(lambda: file_ops.export_semantics(self, "json"))
        a["export_csv"].triggered.connect(lambda: file_ops.export_semantics(self, "csv"))
        a["export_mesh"].triggered.connect(lambda: file_ops.export_mesh(self))
        a["apply_edits"].triggered.connect(lambda: file_ops.apply_edit_list_dialog(self))
        a["save_edits"].triggered.connect(lambda: file_ops.save_edit_list_dialog(self))
        a["quit"].triggered.connect(self.close)
        a["revert_frame"].triggered.connect(ad.revert_frame)
        a["range_edit"].triggered.connect(lambda: file_ops.range_edit_dialog(self))
        a["mirror"].triggered.connect(ad.mirror)
        a["copy_pose"].triggered.connect(lambda: (ad.copy_pose(), self._update_enabled()))
        a["paste_pose"].triggered.connect(lambda: ad.paste_pose("pose"))
        a["preferences"].triggered.connect(self.preferences_dialog)
        a["play"].triggered.connect(self.timeline.toggle_play)
        a["prev_frame"].triggered.connect(lambda: ad.set_frame(ad.frame - 1))
        a["next_frame"].triggered.connect(lambda: ad.set_frame(ad.frame + 1))
        a["toggle_ghost"].toggled.connect(self._toggle_ghost)
        a["guide"].triggered.connect(lambda: __import__("app.help", fromlist=["show_guide"]).show_guide(self))
        a["about"].triggered.connect(lambda: __import__("app.help", fromlist=["show_about"]).show_about(self))

        # widgets <-> model: one Connections record, disconnected on close (napari's teardown)
        c = self.bindings = Connections()
        c.connect(self.panel.valueEdited, self._on_value_edited)
        c.connect(self.panel.groupResetRequested, lambda key: ad.revert_group(panel_groups(ad.doc.names)[key]))
        c.connect(self.timeline.frameChanged, ad.set_frame)
        c.connect(self.timeline.rangeChanged, ad.set_selection)
        c.connect(self.curve_view.frameClicked, ad.set_frame)
        c.connect(self.curve_view.valueEdited, self._on_curve_edited)
        c.connect(ad.selectionChanged, self.curve_view.set_selection)
        c.connect(ad.documentReplaced, self._on_document)
        c.connect(ad.frameChanged, self._on_frame)
        c.connect(ad.valuesChanged, self._on_values)
        c.connect(ad.dirtyChanged, lambda _d: self._update_title())
        c.connect(ad.pathChanged, lambda _p: self._update_title())
        self.preview.ready.connect(self._on_preview)
        self.preview_pane.modeChanged.connect(self._on_compare_mode)
        self.preview.failed.connect(lambda exc: (self.report(exc, "Preview failed", modal=False),
                                                 self._request_mesh()))
        self.mesh.ready.connect(self._on_mesh)
        self.mesh.status.connect(self.viewport.set_message)
        self.mesh.failed.connect(self._on_mesh_failed)

    # --- errors: the one notifier ----------------------------------------------------------------
    def report(self, exc, title: str = "Error", modal: bool = True):
        msg = one_line(exc) if isinstance(exc, BaseException) else str(exc)
        self.errors.append(msg)
        self.statusBar().showMessage(f"{title}: {msg}", 10000)
        if modal:
            QMessageBox.critical(self, title, msg)
        else:
            self.preview_pane.set_message(f"{title}: {msg}")

    def _on_mesh_failed(self, exc):
        self.viewport.set_message(f"no 3D body: {one_line(exc)}")
        self.errors.append(one_line(exc))

    # --- documents -------------------------------------------------------------------------------
    def maybe_save(self) -> bool:
        """True when it is fine to drop the current document (saved, discarded, or nothing to save)."""
        if not self.adapter.needs_save:
            return True
        name = self.adapter.doc.path.name if self.adapter.doc.path else "the new bitstream"
        answer = QMessageBox.question(
            self, "Unsaved changes", f"Save the changes to {name}?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
            | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Save)
        if answer == QMessageBox.StandardButton.Save:
            return self.save()
        return answer == QMessageBox.StandardButton.Discard

    def open_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open bitstream", str(self._dir()), "IHVC bitstream (*.ihvc)")
        if path:
            self.open_path(path)

    def open_path(self, path) -> bool:
        """Open a bitstream; on any error show one line and keep the current document."""
        if not self.maybe_save():
            return False
        try:
            from engine.codec import container
            bs = container.read(Path(path))
        except USER_ERRORS as exc:
            self.report(exc, "Cannot open bitstream")
            return False
        self.set_document(Document(bs, path))
        return True

    def set_document(self, doc: Document, untitled: bool = False):
        self.adapter.set_document(doc, untitled)

    def save(self) -> bool:
        doc = self.adapter.doc
        if doc is None:
            return False
        if doc.path is None or self.adapter.untitled:
            return self.save_as()
        return self._save_to(doc.path)

    def save_as(self) -> bool:
        if self.adapter.doc is None:
            return False
        path, _ = QFileDialog.getSaveFileName(self, "Save bitstream as", str(self._dir() / "edited.ihvc"),
                                              "IHVC bitstream (*.ihvc)")
        return bool(path) and self._save_to(Path(path).with_suffix(".ihvc"))

    def _save_to(self, path) -> bool:
        try:
            saved = self.adapter.save(path)      # written, read back and compared (engine.studio.verify)
        except USER_ERRORS as exc:
            self.report(exc, "Cannot save")
            return False
        self.statusBar().showMessage(saved.message, 8000)
        return True

    def _dir(self) -> Path:
        """Where file dialogs start: the open file's own folder, else the user's documents (never the
        program's own assets/ folder, where the bundled sample lives)."""
        from engine.fileio import ASSETS
        doc = self.adapter.doc
        if doc is not None and doc.path and not self.adapter.untitled:
            folder = doc.path.resolve().parent
            if folder != ASSETS.resolve():
                return folder
        return documents_dir()

    # --- reactions to the model ---------------------------------------------------------------------
    def _on_document(self):
        doc = self.adapter.doc
        self.preview.set_bitstream(doc.bitstream)
        size = (doc.bitstream.width, doc.bitstream.height)
        self.panel.set_semantics(doc.names, doc.steps, doc.original.min(0), doc.original.max(0), frame_size=size)
        self.timeline.set_clip(doc.n_frames, doc.fps, doc.bitstream.key_frames)
        self.timeline.set_markers(doc.edited_frames())
        self.curve_view.set_semantics(doc.names, doc.steps, frame_size=size)
        self.curve_view.set_curves(doc.original, doc.edited)
        self.curve_view.set_selection(None)
        self.curve_view.set_frame(self.adapter.frame)
        self.viewport.vertices = None
        self.mesh.last = None
        self._update_title()
        self._update_enabled()
        self._refresh_frame()

    def _on_frame(self, frame: int):
        self._dragging = False           # a new frame is never a draft (a drag acts on one frame)
        self.timeline.set_frame(frame)
        self.curve_view.set_frame(frame)
        self._refresh_frame()

    def _on_values(self, frames):
        self.preview.invalidate(frames)
        self.timeline.set_markers(self.adapter.doc.edited_frames())
        self.curve_view.set_curves(self.adapter.doc.original, self.adapter.doc.edited)
        if self.adapter.frame in set(int(f) for f in frames):
            self._refresh_frame()
        else:
            self._update_status()        # the edited-frame count follows every change (undo / redo too)

    def _refresh_frame(self):
        ad = self.adapter
        doc = ad.doc
        if doc is None:
            return
        f = ad.frame
        self.panel.set_frame_values(doc.edited[f], doc.original[f])
        self.preview.request(f, doc.original[f], doc.edited[f], draft=self._dragging)
        # The 3D body follows the preview (both use the CPU; the decoded frame matters most).
        self._mesh_wanted = (f, doc.original[f].copy(), doc.edited[f].copy())
        if self.mesh.last is None and not self.mesh.worker.busy:
            self._request_mesh()
        self._update_status()

    def _update_status(self):
        """Status bar figures, from the document's current state; frames count from 0 everywhere."""
        doc = self.adapter.doc
        if doc is None:
            self.status_label.setText("")
            return
        n = len(doc.edited_frames())
        self.status_label.setText(f"frame {self.adapter.frame} of 0–{doc.n_frames - 1} · {doc.fps:g} fps · "
                                  f"{n} edited frame{'' if n == 1 else 's'}")

    def _on_value_edited(self, index: int, value: float, final: bool):
        self._dragging = not final
        serial = self.preview.serial
        self.adapter.set_value(index, value, final)
        if final and self.preview.serial == serial and self.preview.last_draft:
            self._refresh_frame()        # released where the drag left it: the full frame replaces the draft
        doc, f = self.adapter.doc, self.adapter.frame
        self.panel.row(index).set_values(float(doc.edited[f, index]), float(doc.original[f, index]))  # show the snap
        self.curve_view.set_index(index)     # the curve follows the semantic edited last

    def _on_curve_edited(self, frame: int, index: int, value: float, final: bool):
        # A dragged curve point is a slider edit on its frame: the same undo path and drag merging.
        self.adapter.set_frame(frame)
        self._on_value_edited(index, value, final)

    def _on_preview(self, serial, frame, original, edited, draft=False, invented=None):
        # The current frame, or (while playing or scrubbing ahead of the decoder) the newest decoded
        # one: the pane says which frame it shows, and original and edited always come as a pair.
        if self.adapter.doc is not None and 0 <= frame < self.adapter.doc.n_frames:
            edited_here = not np.array_equal(self.adapter.doc.original[frame], self.adapter.doc.edited[frame])
            note = "edited" if edited_here else "unedited"
            self.preview_pane.set_frames(serial, frame, original, edited,
                                         note + (f" · {self.preview.note}" if self.preview.note else ""), draft,
                                         invented)
        # Redrawing the 3D body costs 165-290 ms on the GUI thread with a software GL, which made every
        # drag step (and every played frame) wait for it; while previews stream in (drag, playback,
        # scrubbing) the body follows at most every MESH_DRAG_INTERVAL s, and with the newest full
        # frame (slider released, playback stopped) at once.
        now = time.monotonic()
        final = not draft and serial == self.preview.serial
        if not final and now - self._mesh_at < MESH_DRAG_INTERVAL:
            return
        self._mesh_at = now
        self._request_mesh()

    def _on_compare_mode(self, mode: str):
        self.prefs.compare_mode = mode
        self.prefs.save()

    def _request_mesh(self):
        wanted, self._mesh_wanted = self._mesh_wanted, None
        if wanted is not None and self.adapter.doc is not None:
            self._mesh_requested = wanted    # MeshService shows only its newest request: these rows
            self.mesh.request(self.adapter.doc.bitstream, *wanted)

    def _on_mesh(self, frame, faces, verts, ghost):
        if frame == self.adapter.frame:
            self.viewport.set_meshes(faces, verts, ghost)

    def _toggle_ghost(self, on: bool):
        self.viewport.show_ghost = on
        self.viewport.schedule()

    def _update_title(self):
        doc = self.adapter.doc
        name = (doc.path.name if doc and doc.path else "untitled") if doc else "no bitstream"
        self.setWindowTitle(f"{name}[*] — IHVC Studio")
        self.setWindowModified(self.adapter.needs_save)

    def _update_enabled(self):
        has = self.adapter.doc is not None
        for n in ("save", "save_as", "export_video", "export_json", "export_csv", "export_mesh", "apply_edits",
                  "save_edits", "revert_frame", "range_edit", "mirror", "copy_pose", "play", "prev_frame",
                  "next_frame"):
            self.actions[n].setEnabled(has)
        self.actions["paste_pose"].setEnabled(has and self.adapter.can_paste)

    def preferences_dialog(self):
        dlg = PreferencesDialog(self.prefs, self)
        if dlg.exec():
            new = dlg.preferences()
            for k in ("device", "decoder", "preview_size"):
                setattr(self.prefs, k, getattr(new, k))
            self.prefs.save()
            self.preview.reset_decoder()
            self._refresh_frame()

    # --- bitstream panel: the file's rate, the pending edits' size, plausibility warnings --------
    def _build_bitstream_panel(self):
        self.bitstream_panel = bp = BitstreamPanel()
        # Warnings wrap to the panel's width (no horizontal scrolling); the full text is the tooltip.
        bp.warning_list.setWordWrap(True)
        bp.warning_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        bp.warning_list.setTextElideMode(Qt.TextElideMode.ElideNone)
        bp.warning_list.setResizeMode(bp.warning_list.ResizeMode.Adjust)
        dock = self.bitstream_dock = QDockWidget("Bitstream", self)
        dock.setObjectName("bitstream_dock")
        dock.setWidget(bp)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        for act in self.menuBar().actions():
            if act.text() == "&View":
                act.menu().addAction(dock.toggleViewAction())
        self._file_bs = None             # the bitstream on disk: as opened, then as read back after each save
        self._file_stats = None
        self._mesh_requested = None
        self._meshes: OrderedDict = OrderedDict()   # frame -> (pose + rot it was posed with, FrameMesh)
        c, ad = self.bindings, self.adapter
        c.connect(ad.documentReplaced, self._bitstream_document)
        c.connect(ad.saved, self._bitstream_saved)
        c.connect(ad.valuesChanged, lambda _frames: bp.schedule())
        c.connect(bp.refreshDue, self._bitstream_refresh)
        c.connect(bp.frameActivated, ad.set_frame)
        c.connect(self.mesh.ready, self._bitstream_mesh)

    def _set_file_bitstream(self, bs):
        from engine.codec.rate import rate_of
        doc = self.adapter.doc
        self._file_bs, self._file_stats = bs, None
        try:
            self._file_stats = rate_of(bs)
        except USER_ERRORS as exc:       # a freshly encoded bitstream the writer refuses
            self.bitstream_panel.set_stats(None)
            self.bitstream_panel.set_pending(None, error=one_line(exc))
            return
        name = doc.path.name if doc.path is not None and not self.adapter.untitled else "untitled (not saved)"
        self.bitstream_panel.set_stats(self._file_stats, name)

    def _bitstream_document(self):
        self._meshes.clear()
        self._set_file_bitstream(self.adapter.doc.bitstream)
        self._bitstream_refresh()

    def _bitstream_saved(self, saved):
        self._set_file_bitstream(saved.bitstream)
        self._bitstream_refresh()

    def _bitstream_refresh(self):
        """Pending size change (the edited semantics coded in memory) and plausibility warnings."""
        from engine.studio import plausibility
        from engine.codec.rate import pending_change
        doc, bp = self.adapter.doc, self.bitstream_panel
        if doc is None or self._file_stats is None:
            return
        n_edited = len(doc.edited_frames())
        try:
            bp.set_pending(pending_change(self._file_bs, doc.edited, self._file_stats), n_edited)
        except USER_ERRORS as exc:
            bp.set_pending(None, n_edited, one_line(exc))
        # Meshes posed from other values than the current ones are stale: left out until re-posed.
        meshes = {f: m for f, (pose, m) in self._meshes.items() if pose == doc.edited[f, :24].tobytes()}
        warnings = plausibility.check(doc.original, doc.edited, doc.names, doc.bitstream.body_model, meshes)
        bp.set_warnings(warnings)
        self.timeline.set_warning_frames(w.frame for w in warnings)

    def _bitstream_mesh(self, frame, faces, verts, ghost):
        """Keep the posed body of recent frames for the box check (the 3D view poses one frame at a time)."""
        from engine.studio.plausibility import FrameMesh
        doc, wanted = self.adapter.doc, self._mesh_requested
        if doc is None or wanted is None or wanted[0] != frame:
            return
        focal = np.asarray(doc.bitstream.gop_of(frame)[0].key.focal, float)
        # Every 4th vertex: the share of the body outside its box hardly changes, memory drops fourfold.
        mesh = FrameMesh(np.asarray(verts)[::4], np.asarray(ghost)[::4], focal)
        self._meshes[frame] = (np.asarray(wanted[2], float)[:24].tobytes(), mesh)   # pose + rot: what posing used
        self._meshes.move_to_end(frame)
        while len(self._meshes) > MESHES_KEPT:
            self._meshes.popitem(last=False)
        if doc.edited_mask()[frame].any():
            self.bitstream_panel.schedule()

    # --- closing ------------------------------------------------------------------------------------
    def closeEvent(self, event):
        if not self.maybe_save():
            event.ignore()
            return
        if self._task is not None and self._task.isRunning():
            self._task.cancel()
            self._task.wait(10000)
        self.timeline.set_playing(False)
        self.bindings.disconnect_all()
        self.preview.stop()
        self.mesh.stop()
        event.accept()

    def current_edited(self) -> np.ndarray:
        return self.adapter.doc.edited[self.adapter.frame]

    # --- long tasks with progress --------------------------------------------------------------
    def run_task(self, title: str, fn, on_success):
        """Run fn(progress) on a TaskThread with a cancellable progress dialog."""
        from .workers import TaskThread
        dlg = QProgressDialog(title, "Cancel", 0, 1000, self)
        dlg.setWindowTitle(title)
        dlg.setWindowModality(Qt.WindowModality.WindowModal)
        dlg.setMinimumDuration(0)
        dlg.setValue(0)
        task = TaskThread(fn, self)
        self._task = task

        def progressed(done, total):
            dlg.setMaximum(total)
            dlg.setValue(min(done, total - 1) if total > 1 else 0)

        def finish():
            dlg.reset()
            dlg.close()
            self._task = None

        task.progressed.connect(progressed)
        task.stage.connect(lambda stage: dlg.setLabelText(f"{title}: {stage}"))
        task.succeeded.connect(lambda r: (finish(), on_success(r)))
        task.failed.connect(lambda exc: (finish(), self.report(exc, title + " failed")))
        task.cancelled.connect(lambda: (finish(), self.statusBar().showMessage(f"{title}: cancelled", 5000)))
        dlg.canceled.connect(task.cancel)
        task.start()
        return task
