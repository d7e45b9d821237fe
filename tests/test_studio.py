"""GUI tests (pytest-qt, offscreen) with a fake decoder / body model; see conftest.studio."""
import json
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtWidgets import QMessageBox

import main as cli
from engine.codec import container

from .conftest import opaque_bitstream

pytestmark = pytest.mark.timeout(60)
SAMPLE = Path(__file__).resolve().parent.parent / "assets" / "sample.ihvc"


def drag(row, ticks):
    """Simulate a slider drag: press, several moves, release."""
    row.slider.setSliderDown(True)
    for t in ticks:
        row.slider.setValue(t)
    row.slider.setSliderDown(False)
    row.slider.sliderReleased.emit()


def test_slider_changes_document_and_preview(studio, qtbot):
    doc = studio.adapter.doc
    row = studio.panel.row("left_elbow.z")
    before = studio.preview_pane.edited._pixmap.toImage().pixel(1, 1)
    start = row.slider.value()
    drag(row, [start + 5, start + 10, start + 20])
    i = doc.index("left_elbow.z")
    assert doc.edited[0, i] == pytest.approx((start + 20) * 0.02)
    assert doc.dirty and studio.isWindowModified()
    assert studio.adapter.undo_stack.count() == 1                 # one drag = one command
    assert "●" in row.orig.text()                                 # edited mark with the original beside
    qtbot.waitUntil(lambda: studio.preview_pane.edited._pixmap.toImage().pixel(1, 1) != before, timeout=5000)
    assert studio.preview_pane.original._pixmap.toImage().pixel(1, 1) == before
    assert 0 in studio.timeline.bar.edited


def test_undo_redo_and_separate_drags(studio):
    doc, stack = studio.adapter.doc, studio.adapter.undo_stack
    row = studio.panel.row("head.y")
    i = doc.index("head.y")
    s = row.slider.value()
    drag(row, [s + 3, s + 6])
    drag(row, [s + 9])
    assert stack.count() == 2
    stack.undo()
    assert doc.edited[0, i] == pytest.approx((s + 6) * 0.02)
    assert row.slider.value() == s + 6                             # the widget follows the model
    stack.undo()
    assert np.array_equal(doc.edited, doc.original) and not doc.dirty
    stack.redo()
    stack.redo()
    assert doc.edited[0, i] == pytest.approx((s + 9) * 0.02)


def test_spin_box_shows_degrees_and_snaps(studio):
    doc = studio.adapter.doc
    row = studio.panel.row("rot.y")
    row.spin.setValue(10.0)                                        # degrees in the UI
    v = doc.edited[0, doc.index("rot.y")]
    assert v == pytest.approx(np.round(np.radians(10.0) / 0.01) * 0.01)


def test_save_reopen_equal(studio, tmp_path):
    doc = studio.adapter.doc
    payloads = [g.key_picture.payload for g in doc.bitstream.gops]
    studio.adapter.set_frame(7)
    studio.panel.row("right_shoulder.x").spin.setValue(40.0)
    edited = doc.edited.copy()
    out = tmp_path / "saved.ihvc"
    assert studio._save_to(out)
    assert not studio.adapter.needs_save and not studio.isWindowModified()
    assert studio.open_path(out)
    back = studio.adapter.doc
    assert np.allclose(back.original, edited, atol=1e-9)
    assert [g.key_picture.payload for g in back.bitstream.gops] == payloads


def test_corrupt_file_shows_error_and_keeps_document(studio, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(QMessageBox, "critical", lambda *a, **k: shown.append(a[2]))
    bad = tmp_path / "bad.ihvc"
    data = bytearray(container.to_bytes(opaque_bitstream()))
    data[40:60] = b"\xff" * 20
    bad.write_bytes(bytes(data[:200]))
    doc = studio.adapter.doc
    assert not studio.open_path(bad)
    assert len(shown) == 1 and "\n" not in shown[0] and shown[0]
    assert studio.adapter.doc is doc
    studio.panel.row("head.x").spin.setValue(5.0)                 # still usable
    assert doc.dirty


def test_close_with_unsaved_edits_prompts(studio, monkeypatch):
    asked = []
    answer = [QMessageBox.StandardButton.Cancel]
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: (asked.append(a[2]), answer[0])[1])
    studio.panel.row("head.z").spin.setValue(12.0)
    assert not studio.close()                                      # cancelled: window stays
    assert asked and studio.isVisible()
    answer[0] = QMessageBox.StandardButton.Discard
    assert studio.close()
    assert len(asked) == 2


def test_range_selection_edit_and_mirror(studio):
    doc, ad = studio.adapter.doc, studio.adapter
    studio.timeline.set_selection(5, 10)
    ad.set_frame(6)
    i = doc.index("left_wrist.x")
    row = studio.panel.row("left_wrist.x")
    row.slider.setValue(row.slider.value() + 10)                   # offset over the range
    d = doc.edited[:, i] - doc.original[:, i]
    assert np.allclose(d[5:11], 0.2) and np.all(d[:5] == 0) and np.all(d[11:] == 0)
    ad.mirror()
    ad.mirror()
    assert np.allclose(doc.edited[:, i] - doc.original[:, i], d)
    studio.actions["revert_frame"].trigger()
    assert np.array_equal(doc.edited, doc.original)


def test_cli_and_studio_give_equal_semantics(studio, tmp_path):
    edits = {"edits": [{"semantic": "left_shoulder.z", "frames": [3, 20], "offset": 25, "unit": "deg",
                        "ease_in": 4, "ease_out": 4}, {"mirror": True, "frames": [10, 12]},
                       {"semantic": "loc.cx", "frames": 0, "value": 0.4}]}
    ej = tmp_path / "edits.json"
    ej.write_text(json.dumps(edits))
    src = studio.adapter.doc.path
    out = tmp_path / "cli.ihvc"
    assert cli.main(["edit", str(src), "--edits", str(ej), "-o", str(out)]) == 0
    from app import file_ops
    assert file_ops.apply_edit_list_dialog(studio, ej)
    assert np.array_equal(container.read(out).semantics(), studio.adapter.doc.edited)
    assert studio.adapter.undo_stack.count() == 1


def test_bad_edit_list_clear_error_nothing_written(studio, tmp_path, capsys, monkeypatch):
    ej = tmp_path / "bad.json"
    ej.write_text(json.dumps({"edits": [{"semantic": "left_knee.x", "frames": 2, "offset": 1}]}))
    out = tmp_path / "never.ihvc"
    assert cli.main(["edit", str(studio.adapter.doc.path), "--edits", str(ej), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown semantic 'left_knee.x'" in err and not out.exists()
    assert list(tmp_path.glob(".never*")) == []
    shown = []
    monkeypatch.setattr(QMessageBox, "critical", lambda *a, **k: shown.append(a[2]))
    from app import file_ops
    assert not file_ops.apply_edit_list_dialog(studio, ej)
    assert "left_knee.x" in shown[0] and not studio.adapter.doc.dirty


def test_stale_previews_dropped(studio, qtbot):
    ad = studio.adapter
    for f in range(1, 12):
        ad.set_frame(f)
    qtbot.waitUntil(lambda: studio.preview_pane.frame == 11, timeout=5000)
    qtbot.wait(50)
    assert studio.preview_pane.frame == 11 and studio.preview_pane.serial == studio.preview.serial
    studio.preview.invalidate([11])
    assert all(k[1] != 11 for k in studio.preview.cache.keys() if k[0] == "edited")


def test_mesh_viewport_and_export(studio, qtbot, tmp_path):
    qtbot.waitUntil(lambda: studio.viewport.vertices is not None, timeout=10000)
    from app import file_ops
    assert file_ops.export_mesh(studio, tmp_path / "m.obj")
    import trimesh
    m = trimesh.load(tmp_path / "m.obj", process=False)
    assert len(m.faces) == len(studio.viewport.faces)


@pytest.mark.skipif(not SAMPLE.exists(), reason="assets/sample.ihvc not generated")
def test_open_sample(studio):
    assert studio.open_path(SAMPLE)
    doc = studio.adapter.doc
    assert doc.n_frames >= 100 and doc.bitstream.width == 384
    assert len(studio.panel.rows) == doc.dims
    assert studio.timeline.bar.n_frames == doc.n_frames


def test_export_video_and_semantics(studio, qtbot, tmp_path):
    from app import file_ops
    studio.panel.row("head.x").spin.setValue(20.0)
    task = file_ops.export_video(studio, tmp_path / "out.mp4")
    with qtbot.waitSignal(task.succeeded, timeout=30000):
        pass
    from engine.codec.video import read_video
    clip = read_video(tmp_path / "out.mp4")
    assert clip.frames.shape[0] == studio.adapter.doc.n_frames
    assert file_ops.export_semantics(studio, "csv", tmp_path / "s.csv")
    assert (tmp_path / "s.csv").read_text().count("\n") == studio.adapter.doc.n_frames + 1


def test_open_video_errors_and_cancel(studio, qtbot, monkeypatch):
    import threading
    from types import SimpleNamespace

    import engine.analysis.encoder as enc
    from app import file_ops
    from engine.errors import InputError
    shown = []
    monkeypatch.setattr(QMessageBox, "critical", lambda *a, **k: shown.append(a[2]))
    monkeypatch.setattr(enc, "encode_video", lambda path, progress=None, **k: (_ for _ in ()).throw(
        InputError(f"no person found in {path}")))
    doc = studio.adapter.doc
    task = file_ops.open_video(studio, "/tmp/nobody.mp4")
    with qtbot.waitSignal(task.failed, timeout=10000):
        pass
    qtbot.waitUntil(lambda: bool(shown), timeout=5000)
    assert shown[0] == "no person found in /tmp/nobody.mp4" and studio.adapter.doc is doc
    started = threading.Event()

    def slow(path, progress=None, **k):
        started.set()
        for i in range(1000):
            progress(i, 1000)
            threading.Event().wait(0.01)
        raise AssertionError("not cancelled")
    monkeypatch.setattr(enc, "encode_video", slow)
    task = file_ops.open_video(studio, "/tmp/long.mp4")
    qtbot.waitUntil(started.is_set, timeout=5000)
    with qtbot.waitSignal(task.cancelled, timeout=10000):
        task.cancel()
    assert studio.adapter.doc is doc and len(shown) == 1

    def fine(path, progress=None, **k):
        return SimpleNamespace(bitstream=opaque_bitstream(12),
                               warnings=[f"{path} decoded to 12 of the 40 frames its container states"])
    monkeypatch.setattr(enc, "encode_video", fine)
    task = file_ops.open_video(studio, "/tmp/ok.mp4")
    qtbot.waitUntil(lambda: studio.adapter.doc is not doc, timeout=10000)
    assert studio.adapter.doc.n_frames == 12 and studio.adapter.needs_save
    assert studio.statusBar().currentMessage() == ("encoded ok.mp4: 12 frames; /tmp/ok.mp4 decoded to 12 of the 40 "
                                                   "frames its container states")


def test_group_reset_and_paste(studio):
    doc, ad = studio.adapter.doc, studio.adapter
    studio.panel.row("left_elbow.x").spin.setValue(30.0)
    studio.panel.row("left_elbow.y").spin.setValue(-30.0)
    studio.panel.row("head.x").spin.setValue(10.0)
    studio.panel.reset_buttons["left_elbow"].click()
    e = doc.index("left_elbow.x")
    assert np.array_equal(doc.edited[0, e:e + 3], doc.original[0, e:e + 3])
    assert doc.edited[0, doc.index("head.x")] != doc.original[0, doc.index("head.x")]
    assert not studio.actions["paste_pose"].isEnabled()
    studio.actions["copy_pose"].trigger()
    ad.set_frame(3)
    studio.actions["paste_pose"].trigger()
    assert np.array_equal(doc.edited[3, :21], doc.edited[0, :21])
    assert np.array_equal(doc.edited[3, 21:], doc.original[3, 21:])


@pytest.mark.skipif(not SAMPLE.exists(), reason="assets/sample.ihvc not generated")
def test_sample_with_real_decoder(qtbot, monkeypatch):
    """Integration: the real analytic decoder and body model behind the studio, on the sample."""
    pytest.importorskip("engine.synthesis.decoder")
    from app.main_window import MainWindow
    from app.preferences import Preferences
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Discard)
    win = MainWindow(Preferences(device="cpu"))
    qtbot.addWidget(win)
    win.show()
    try:
        assert win.open_path(SAMPLE)
        qtbot.waitUntil(lambda: win.preview_pane.frame == 0 or bool(win.errors), timeout=60000)
        assert not win.errors
        img0 = win.preview_pane.edited._pixmap.toImage()
        assert (img0.width(), img0.height()) == (384, 384)
        win.panel.row("head.y").spin.setValue(-30.0)
        serial = win.preview.serial
        qtbot.waitUntil(lambda: win.preview_pane.serial == serial, timeout=30000)
        assert win.preview_pane.edited._pixmap.toImage() != img0
        assert win.preview_pane.original._pixmap.toImage() == img0
        qtbot.waitUntil(lambda: win.viewport.vertices is not None, timeout=30000)
        assert win.viewport.vertices.shape[0] > 10000                      # the Anny mesh
    finally:
        win.preview.stop()
        win.mesh.stop()


def test_range_dialog_and_preferences(studio, tmp_path):
    from PySide6.QtCore import QSettings

    from app.preferences import Preferences, PreferencesDialog
    from app.range_dialog import RangeEditDialog
    doc = studio.adapter.doc
    dlg = RangeEditDialog(doc.names, doc.n_frames, 12, 4, index=doc.index("right_elbow.y"))
    dlg.amount.setValue(45.0)
    dlg.ease_in.setValue(2)
    kw = dlg.edit_kwargs()
    assert kw["first"] == 4 and kw["last"] == 12 and kw["offset"] == pytest.approx(np.pi / 4)
    studio.adapter.set_range(kw.pop("index"), kw.pop("first"), kw.pop("last"), **kw)
    i = doc.index("right_elbow.y")
    # every frame of the range changes, the eased first frame less than the full offset (#16)
    d = doc.edited[:, i] - doc.original[:, i]
    assert 0 < d[4] < d[5] < d[6] and d[6] == pytest.approx(np.pi / 4, abs=0.011) and d[12] != 0
    assert d[3] == 0 and d[13] == 0
    p = PreferencesDialog(Preferences(device="cpu", decoder="learned", preview_size=256)).preferences()
    assert (p.device, p.decoder, p.preview_size) == ("cpu", "learned", 256)
    s = QSettings(str(tmp_path / "p.ini"), QSettings.Format.IniFormat)
    p.save(s)
    assert Preferences.load(s) == p


def test_previews_move_forward_during_playback(studio, qtbot):
    """A result overtaken by a newer request is still shown (playback would freeze otherwise),
    but never one older than what is on screen."""
    got = []
    studio.preview.ready.connect(lambda serial, frame, *_: got.append((serial, frame)))
    img = np.zeros((8, 8, 3), np.uint8)
    base = studio.preview.emitted
    studio.preview.serial = base + 10                       # newer requests already made
    for serial, frame in ((base + 3, 3), (base + 2, 2), (base + 5, 5)):
        studio.preview._done(None, (serial, frame, img, img, False, None))
    assert got == [(base + 3, 3), (base + 5, 5)]
    assert studio.preview_pane.frame == 5                   # shown, though frame 5 is not current
