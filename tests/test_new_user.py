"""Issue #16: the studio for a new user. Real key events go to the focused widgets (pytest-qt);
each test fails without its fix."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox

import main as cli
from engine.codec import container

from .conftest import FakeBody, FakeDecoder
from .conftest import opaque_bitstream as make_bitstream

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "assets" / "sample.ihvc"
CTRL, SHIFT = Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.ShiftModifier


def focus(qtbot, win, widget):
    win.activateWindow()
    QApplication.setActiveWindow(win)
    widget.setFocus()
    qtbot.waitUntil(widget.hasFocus, timeout=3000)


def frame_box_text(win) -> str:
    return win.timeline.spin.lineEdit().text()


# --- 1. edit keys act on the document whatever has the focus -----------------------------------

def test_edit_keys_act_on_document_from_the_frame_box(studio, qtbot):
    doc, ad, box = studio.adapter.doc, studio.adapter, studio.timeline.spin
    i = doc.index("head.y")
    studio.panel.row("head.y").spin.setValue(20.0)
    edited = doc.edited[0].copy()
    assert doc.dirty
    focus(qtbot, studio, box)
    shown = frame_box_text(studio)
    qtbot.keyClick(box, Qt.Key.Key_Z, CTRL)                          # undo, not the box's own undo
    assert np.array_equal(doc.edited, doc.original) and frame_box_text(studio) == shown
    qtbot.keyClick(box, Qt.Key.Key_Y, CTRL)                          # redo (Windows convention)
    assert np.array_equal(doc.edited[0], edited)
    qtbot.keyClick(box, Qt.Key.Key_Z, CTRL)
    qtbot.keyClick(box, Qt.Key.Key_Z, CTRL | SHIFT)                  # redo (the other convention)
    assert doc.edited[0, i] == edited[i]
    # copy the pose of frame 0, paste it on frame 4: the box keeps its number, the pose moves
    qtbot.keyClick(box, Qt.Key.Key_C, CTRL)
    ad.set_frame(4)
    focus(qtbot, studio, box)
    assert frame_box_text(studio) == "4"
    qtbot.keyClick(box, Qt.Key.Key_V, CTRL)
    assert frame_box_text(studio) == "4"                              # not blanked by the clipboard
    assert np.array_equal(doc.edited[4, :21], doc.edited[0, :21])
    # mirror and revert from the box too
    before = doc.edited[4].copy()
    qtbot.keyClick(box, Qt.Key.Key_M, CTRL)
    assert not np.array_equal(doc.edited[4], before)
    qtbot.keyClick(box, Qt.Key.Key_R, CTRL)
    assert np.array_equal(doc.edited[4], doc.original[4])


def test_value_box_keeps_its_typing_but_not_the_edit_keys(studio, qtbot):
    doc = studio.adapter.doc
    spin = studio.panel.row("left_elbow.y").spin
    i = doc.index("left_elbow.y")
    focus(qtbot, studio, spin)
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin, "30")                                        # typing is the box's own
    qtbot.keyClick(spin, Qt.Key.Key_Return)
    assert doc.edited[0, i] == pytest.approx(np.radians(30), abs=0.011)
    qtbot.keyClick(spin, Qt.Key.Key_Z, CTRL)                          # undo goes to the document
    assert doc.edited[0, i] == doc.original[0, i]
    assert spin.value() == pytest.approx(np.degrees(doc.original[0, i]), abs=0.6)   # the box follows
    # nothing left to undo: Ctrl+Z still never edits the box's text
    text = spin.lineEdit().text()
    qtbot.keyClick(spin, Qt.Key.Key_Z, CTRL)
    assert spin.lineEdit().text() == text
    # typing in the frame box still moves to a frame
    box = studio.timeline.spin
    focus(qtbot, studio, box)
    box.lineEdit().selectAll()
    qtbot.keyClicks(box, "7")
    qtbot.keyClick(box, Qt.Key.Key_Return)
    assert studio.adapter.frame == 7


# --- 2. discoverable: main.py FILE, Help, tooltips with units, human names --------------------------

def test_main_file_opens_the_studio(monkeypatch, tmp_path, capsys):
    import app.cli_studio as cs
    seen = []
    monkeypatch.setattr(cs, "run", lambda args: seen.append(args.file) or 0)
    clip = tmp_path / "clip.ihvc"
    container.write(make_bitstream(), clip)
    assert cli.main([str(clip)]) == 0 and seen == [str(clip)]
    assert cli.main([str(tmp_path / "talk.mp4")]) == 0 and seen[-1] == str(tmp_path / "talk.mp4")
    monkeypatch.undo()
    # a missing file: one line, status 2, no window
    assert cli.main([str(tmp_path / "missing.ihvc")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file" in err[0]
    # not a file and not a command: still the usual "invalid choice"
    with pytest.raises(SystemExit):
        cli.main(["frobnicate"])


def test_video_argument_is_offered_for_encoding(studio, qtbot, monkeypatch):
    import engine.analysis.encoder as enc
    from types import SimpleNamespace

    from app.cli_studio import offer_encode
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: (asked.append(a[2]), QMessageBox.StandardButton.Yes)[1])
    monkeypatch.setattr(enc, "encode_video", lambda path, progress=None, **k: SimpleNamespace(
        bitstream=make_bitstream(9), warnings=[]))
    doc = studio.adapter.doc
    assert offer_encode(studio, "/tmp/talk.mp4")
    qtbot.waitUntil(lambda: studio.adapter.doc is not doc, timeout=10000)
    assert "talk.mp4" in asked[0] and studio.adapter.doc.n_frames == 9


def test_help_guide_on_f1_and_about(studio, qtbot):
    focus(qtbot, studio, studio.timeline.spin)
    qtbot.keyClick(studio.timeline.spin, Qt.Key.Key_F1)
    dlg = getattr(studio, "_guide", None)
    assert dlg is not None and dlg.isVisible()
    text = dlg.text.toPlainText()
    for needle in ("Ctrl+Y", "Ctrl+Shift+Z", "Ctrl+V", "degrees", "pixels of the frame", "numbered from 0",
                   "left_shoulder"):
        assert needle in text, needle
    menus = [a.text() for a in studio.menuBar().actions()]
    assert "&Help" in menus
    studio.actions["about"].trigger()
    about = studio._about.text.toPlainText()
    assert "Apache" in about and "CC BY 4.0" in about and "Anny" in about and "generator.safetensors" in about


def test_every_slider_and_value_box_has_a_tooltip_with_its_unit(studio):
    units = {"°": "degrees", " px": "pixels", " m": "metres"}
    for row in studio.panel.rows:
        for w in (row.slider, row.spin):
            tip = w.toolTip()
            assert tip and row.name in tip, row.name
        suffix = row.spin.suffix()
        assert suffix in units and units[suffix] in row.spin.toolTip(), (row.name, suffix)
    # the box in pixels: 0.5 of a 48 px frame shows as 24 px
    doc = studio.adapter.doc
    row = studio.panel.row("loc.cx")
    assert row.spin.suffix() == " px"
    assert row.spin.value() == pytest.approx(doc.edited[0, doc.index("loc.cx")] * doc.bitstream.width, abs=0.01)
    row.spin.setValue(30.0)                                            # typed in pixels
    assert doc.edited[0, doc.index("loc.cx")] == pytest.approx(30.0 / 48, abs=0.001)
    # the timeline's frame box and the preview settings say what they hold
    assert "from 0" in studio.timeline.spin.toolTip()


def test_range_dialog_uses_human_names_and_pixels(studio, qtbot, monkeypatch):
    from app import file_ops
    from app.range_dialog import RangeEditDialog
    doc = studio.adapter.doc
    dlg = RangeEditDialog(doc.names, doc.n_frames, 2, 9, index=doc.index("loc.cx"), frame_size=(48, 48))
    items = [dlg.semantic.itemText(k) for k in range(dlg.semantic.count())]
    assert "box centre x (px)" in items and "body rotation y turn (°)" in items
    assert not any(re.fullmatch(r"[a-z_]+\.[a-z_]+", t) for t in items)       # no internal names
    assert dlg.amount.suffix() == " px"
    dlg.amount.setValue(12.0)
    assert dlg.edit_kwargs()["offset"] == pytest.approx(12.0 / 48)
    # the curve view follows the semantic just range-edited
    i = doc.index("trans.z")

    def run_dialog(self):
        self.semantic.setCurrentIndex(i)
        self.amount.setValue(0.2)
        self.first.setValue(3)
        self.last.setValue(12)
        self.ease_in.setValue(3)
        self.ease_out.setValue(3)
        return True
    monkeypatch.setattr(RangeEditDialog, "exec", run_dialog)
    assert studio.curve_view.index != i
    file_ops.range_edit_dialog(studio)
    assert studio.curve_view.index == i
    d = doc.edited[:, i] - doc.original[:, i]
    assert d[3] != 0 and d[12] != 0 and d[2] == 0 and d[13] == 0               # both end frames changed


# --- 3. figures from the current state, one frame base, warnings wrap ------------------------------

def test_status_bar_follows_undo_and_frames_share_one_base(studio, qtbot):
    ad, doc = studio.adapter, studio.adapter.doc
    ad.set_frame(3)
    studio.panel.row("head.x").spin.setValue(15.0)
    assert "1 edited frame" in studio.status_label.text()
    ad.set_frame(10)
    qtbot.waitUntil(lambda: studio.preview_pane.frame == 10, timeout=5000)
    status = studio.status_label.text()
    assert re.search(r"\bframe 10\b", status) and "frame 10" in studio.preview_pane.status.text()
    assert studio.timeline.spin.value() == 10
    ad.undo_stack.undo()                                               # an edit on another frame
    assert "0 edited frames" in studio.status_label.text()
    ad.undo_stack.redo()
    assert "1 edited frame" in studio.status_label.text()


def test_warnings_wrap_without_horizontal_scrolling(studio, qtbot):
    from types import SimpleNamespace
    bp = studio.bitstream_panel
    long = "frame 3: " + "left shoulder z beyond its anatomical range " * 6
    bp.set_warnings([SimpleNamespace(text=long, frame=3)])
    studio.bitstream_dock.resize(260, 400)
    qtbot.wait(10)
    assert bp.warning_list.wordWrap()
    assert bp.warning_list.horizontalScrollBarPolicy() == Qt.ScrollBarPolicy.ScrollBarAlwaysOff
    assert bp.warning_list.horizontalScrollBar().maximum() == 0


# --- 4. a useful first view ---------------------------------------------------------------------

def test_remembered_difference_mode_opens_on_a_picture(qtbot, tmp_path, monkeypatch):
    from app.main_window import MainWindow
    from app.preferences import Preferences
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Discard)
    path = tmp_path / "clip.ihvc"
    container.write(make_bitstream(), path)
    for mode in ("diff", "wipe"):
        win = MainWindow(Preferences(compare_mode=mode), decoder_factory=FakeDecoder,
                         body_model_factory=lambda bs, prefs: FakeBody())
        qtbot.addWidget(win)
        win.show()
        try:
            assert win.open_path(path)
            pane = win.preview_pane
            qtbot.waitUntil(lambda: pane.frame == 0, timeout=5000)
            assert pane.mode == mode and pane.shown_mode == "side"
            assert pane.stack.currentWidget() not in (pane.heat, pane.wipe)
            assert pane.fallback.isVisible() and "side by side" in pane.fallback.text()
            assert pane.edited.image is not None and pane.original.image is not None
        finally:
            win.preview.stop()
            win.mesh.stop()


# --- 5. exports a player opens; dialogs start in a sensible folder ---------------------------------

def test_decode_default_is_playable_and_lossless_on_request(tmp_path, monkeypatch, capsys):
    import av

    import engine.synthesis.decoder as D
    bs = make_bitstream(6)
    src = tmp_path / "clip.ihvc"
    container.write(bs, src)

    class Fake:
        refiner = None
        device = __import__("torch").device("cpu")

        def iter_frames(self, frames):
            for i in frames:
                yield i, FakeDecoder(bs).decode_frame(i)
    monkeypatch.setattr(D, "open_decoder", lambda *a, **k: Fake())

    def stream_of(path):
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            return s.codec_context.name, s.codec_context.pix_fmt
    assert cli.main(["decode", str(src), "-o", str(tmp_path / "a.mp4"), "--quiet"]) == 0
    assert stream_of(tmp_path / "a.mp4") == ("h264", "yuv420p")
    assert "H.264 yuv420p CRF 18" in capsys.readouterr().err
    assert cli.main(["decode", str(src), "-o", str(tmp_path / "b.mkv"), "--quiet", "--lossless"]) == 0
    assert stream_of(tmp_path / "b.mkv")[0] == "ffv1"
    assert cli.main(["decode", str(src), "-o", str(tmp_path / "c.mp4"), "--quiet", "--lossless"]) == 0
    assert stream_of(tmp_path / "c.mp4") == ("h264", "gbrp")
    assert cli.main(["decode", str(src), "-o", str(tmp_path / "d.mp4"), "--lossless", "--crf", "20"]) == 2


def test_save_dialogs_start_in_documents_or_the_files_folder(studio, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    import app.main_window as mw
    from engine.fileio import ASSETS
    asked = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (asked.append(a[2]), ("", ""))[1])
    studio.save_as()
    assert Path(asked[-1]).parent == studio.adapter.doc.path.parent       # the file's own folder
    docs = tmp_path / "Documents"
    docs.mkdir()
    monkeypatch.setattr(mw, "documents_dir", lambda: docs)
    studio.adapter.doc.path = ASSETS / "sample.ihvc"                        # the bundled sample
    studio.save_as()
    assert Path(asked[-1]).parent == docs


# --- one mesh renderer (#12) ----------------------------------------------------------------------

def test_viewport_renders_through_the_engine_renderer(studio, qtbot):
    from engine.synthesis import render
    qtbot.waitUntil(lambda: studio.viewport.vertices is not None, timeout=10000)
    studio.viewport.render_now()
    if studio.viewport._render_error:
        pytest.skip(studio.viewport._render_error)
    # the GUI thread's one engine renderer drew it (the overlay and the sample share it)
    assert render._local.renderer.width == studio.viewport.image.shape[1]
    img = studio.viewport.image
    h, w = img.shape[:2]
    bg = np.array([round(c * 255) for c in render.VIEW_BACKGROUND])
    assert np.abs(img[0, 0].astype(int) - bg).max() <= 2                    # background in a corner
    assert np.abs(img[h // 2, w // 2].astype(int) - bg).max() > 30          # the body in the middle


# --- 6. the bundled sample --------------------------------------------------------------------------

@pytest.mark.skipif(not SAMPLE.exists(), reason="assets/sample.ihvc not generated")
def test_sample_is_licence_clean_and_moves_arms_hands_and_head():
    readme = (ROOT / "assets" / "README").read_text(encoding="utf-8")
    assert "CC BY 4.0" in readme and "intel-iot-devkit/sample-videos" in readme
    assert "Creative Commons" in (ROOT / "assets" / "LICENSE-CC-BY-4.0.txt").read_text(encoding="utf-8")
    bs = container.read(SAMPLE)
    assert SAMPLE.stat().st_size < 300_000 and (bs.width, bs.height) == (384, 384)
    sem = bs.semantics()
    names = list(bs.names)
    span = np.degrees(sem.max(0) - sem.min(0))
    for joint in ("left_elbow", "right_elbow", "left_wrist", "right_wrist", "head"):
        assert max(span[names.index(f"{joint}.{a}")] for a in "xyz") > 10, joint     # each really moves


@pytest.mark.skipif(not SAMPLE.exists(), reason="assets/sample.ihvc not generated")
def test_first_arm_edit_on_the_sample_moves_an_arm():
    """Raising her left arm (+45 degrees at the left shoulder) on frame 0 lifts her orange sleeve
    out beside her body (on the image's right, above her hip, where there was only wall), and
    changes nothing on her other side."""
    pytest.importorskip("engine.synthesis.decoder")
    from engine.synthesis.decoder import open_decoder
    bs = container.read(SAMPLE)
    dec = open_decoder(bs, device="cpu", analytic=True)
    row = bs.semantics()[0].copy()
    before = np.asarray(dec.decode_frame(0, row)).astype(int)
    row[list(bs.names).index("left_shoulder.z")] += np.radians(45)
    after = np.asarray(dec.decode_frame(0, row)).astype(int)

    def sleeve(im):                    # the hoodie's orange
        r, g, b = im[..., 0], im[..., 1], im[..., 2]
        return (r > 150) & (g > 70) & (g < 170) & (b < 90)
    beside = (slice(150, 280), slice(290, 380))        # right of her body, shoulder to hip height
    assert sleeve(before)[beside].mean() < 0.01
    assert sleeve(after)[beside].mean() > 0.05                               # the raised arm is there
    changed = np.abs(after - before).mean(-1) > 40
    xs = np.nonzero(changed)[1]
    assert changed.mean() > 0.01 and np.mean(xs > bs.width // 2) > 0.9      # and only on that side
