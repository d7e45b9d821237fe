"""File actions of the main window: open video (encode), exports, edit lists, range edits.

Each function takes the MainWindow; long work runs on a TaskThread with a
cancellable progress dialog; every failure goes to ``window.report``.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from engine.studio.document import Document, export_semantics_csv, export_semantics_json
from engine.errors import InputError
from engine.fileio import atomic_path

VIDEO_FILTER = "Videos (*.mp4 *.mov *.mkv *.avi *.webm);;All files (*)"


def open_video(win, path=None):
    if path is None:
        path, _ = QFileDialog.getOpenFileName(win, "Open video (encode)", str(win._dir()), VIDEO_FILTER)
    if not path or not win.maybe_save():
        return None

    def job(progress):
        from engine.analysis.encoder import encode_video
        return encode_video(path, progress=progress)

    def done(res):
        bs = res.bitstream
        win.set_document(Document(bs, None), untitled=True)
        win.statusBar().showMessage("; ".join([f"encoded {Path(path).name}: {bs.n_frames} frames", *res.warnings]),
                                    20000 if res.warnings else 8000)

    return win.run_task("Encoding video", job, done)


def export_video(win, path=None):
    doc = win.adapter.doc
    if path is None:
        stem = win.adapter.doc.path.stem if win.adapter.doc.path and not win.adapter.untitled else "edited"
        path, _ = QFileDialog.getSaveFileName(win, "Export video (H.264 MP4)", str(win._dir() / f"{stem}.mp4"),
                                              "MP4 (*.mp4)")
    if not path:
        return None
    # Decode the bitstream a save would write (edited semantics, same key pictures), batched when the
    # decoder can, on its own decoder instance (the preview's stays with the preview thread).
    bitstream, fps, n = doc.edited_bitstream(), doc.fps, doc.n_frames
    factory, prefs = win.preview.decoder_factory, win.preview.prefs

    def job(progress):
        from engine.codec.video import PLAYABLE_CRF, write_video
        decoder = factory(bitstream, prefs)

        def frames():
            it = decoder.iter_frames() if hasattr(decoder, "iter_frames") else (
                (i, decoder.decode_frame(i)) for i in range(n))
            for i, rgb in it:
                progress(i, n)
                yield rgb
        # H.264 4:2:0 at high quality: what every common player opens (engine.codec.video.PLAYABLE_CRF).
        return write_video(path, frames(), fps, crf=PLAYABLE_CRF)

    from engine.codec.video import PLAYABLE_TEXT
    return win.run_task("Exporting video", job, lambda n: win.statusBar().showMessage(
        f"wrote {n} frames to {path} ({PLAYABLE_TEXT})", 8000))


def export_semantics(win, fmt: str, path=None):
    doc = win.adapter.doc
    if path is None:
        flt = "JSON (*.json)" if fmt == "json" else "CSV (*.csv)"
        path, _ = QFileDialog.getSaveFileName(win, "Export semantics", str(win._dir() / f"semantics.{fmt}"), flt)
    if not path:
        return False
    try:
        if fmt == "json":
            export_semantics_json(path, doc.names, doc.edited, doc.fps, doc.bitstream.key_frames)
        else:
            export_semantics_csv(path, doc.names, doc.edited)
    except OSError as exc:
        win.report(exc, "Cannot export semantics")
        return False
    win.statusBar().showMessage(f"wrote {path}", 5000)
    return True


def export_mesh(win, path=None):
    last = win.mesh.last
    if last is None or last[0] != win.adapter.frame:
        win.report(InputError("the body mesh of this frame is not ready yet"), "Cannot export mesh")
        return False
    if path is None:
        path, _ = QFileDialog.getSaveFileName(win, "Export mesh", str(win._dir() / f"frame{win.adapter.frame:04d}.obj"),
                                              "Wavefront OBJ (*.obj);;PLY (*.ply)")
    if not path:
        return False
    import trimesh
    _, faces, verts, _ = last
    suffix = Path(path).suffix.lower()
    if suffix not in (".obj", ".ply"):
        win.report(InputError(f"unsupported mesh format {suffix or '(none)'}: use .obj or .ply"), "Cannot export mesh")
        return False
    try:
        with atomic_path(path) as tmp:
            trimesh.Trimesh(verts, faces, process=False).export(str(tmp), file_type=suffix[1:])
    except OSError as exc:
        win.report(exc, "Cannot export mesh")
        return False
    win.statusBar().showMessage(f"wrote {path}", 5000)
    return True


def apply_edit_list_dialog(win, path=None):
    from engine.studio import edits as E
    if path is None:
        path, _ = QFileDialog.getOpenFileName(win, "Apply edit list", str(win._dir()), "Edit list (*.json)")
    if not path:
        return False
    doc = win.adapter.doc
    try:
        edit_list = E.load(path)
        E.check_all(edit_list, doc.names, doc.n_frames, Path(path).name)
    except InputError as exc:
        win.report(exc, "Cannot apply edit list")
        return False
    win.adapter.apply_edit_list(edit_list)
    return True


def save_edit_list_dialog(win, path=None):
    """Write the document's edit log as a JSON edit list; replaying it with ``main.py edit`` on the
    file as opened gives the studio's semantics."""
    doc = win.adapter.doc
    if path is None:
        stem = doc.source.stem if doc.source else "edits"
        path, _ = QFileDialog.getSaveFileName(win, "Save edit list", str(win._dir() / f"{stem}.edits.json"),
                                              "Edit list (*.json)")
    if not path:
        return False
    try:
        written = doc.save_edit_log(path)
    except (OSError, ValueError) as exc:
        win.report(exc, "Cannot save edit list")
        return False
    # The list is relative to the file as opened (a save in place does not move its starting point).
    source = f" (applies to {doc.source.name} as opened)" if doc.source else ""
    win.statusBar().showMessage(f"wrote {len(written)} edits to {path}{source}", 8000)
    return True


def range_edit_dialog(win):
    from .range_dialog import RangeEditDialog
    ad = win.adapter
    first, last = ad.selection or (ad.frame, ad.frame)
    bs = ad.doc.bitstream
    dlg = RangeEditDialog(ad.doc.names, ad.doc.n_frames, first, last, index=ad.last_index, parent=win,
                          frame_size=(bs.width, bs.height))
    if dlg.exec():
        kw = dlg.edit_kwargs()
        index = kw.pop("index")
        ad.set_range(index, kw.pop("first"), kw.pop("last"), **kw)
        win.curve_view.set_index(index)        # the curve follows the semantic just edited
