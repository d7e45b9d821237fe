"""Curve view (pytest-qt, offscreen) and the studio's edit log (saved edit lists replay through the CLI)."""
import json
import math

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QColor

import main as cli
from editor_widgets.curve_view import CurveView
from engine.codec import container
from engine.studio import edits as E
from engine.studio.document import Document

from .conftest import opaque_bitstream
from .test_studio import drag

pytestmark = pytest.mark.timeout(60)


def point(plot, frame, value):
    """Widget pixel of an internal-unit value on a frame."""
    return QPoint(round(plot.x_of(frame)), round(plot.y_of(value * plot.scale)))


def drag_point(qtbot, plot, frame, dy_steps):
    """Press on the edited curve at frame, move up in a few steps of pixels, release."""
    start = point(plot, frame, plot.edited[frame, plot.index])
    qtbot.mousePress(plot, Qt.MouseButton.LeftButton, pos=start)
    for dy in dy_steps:
        qtbot.mouseMove(plot, QPoint(start.x(), start.y() - dy))
    end = QPoint(start.x(), start.y() - dy_steps[-1])
    qtbot.mouseRelease(plot, Qt.MouseButton.LeftButton, pos=end)
    return end


def is_orange(c: QColor) -> bool:
    return c.red() > 180 and 80 < c.green() < 160 and c.blue() < 80


def test_curve_shows_original_and_edited(studio):
    doc, ad, cv = studio.adapter.doc, studio.adapter, studio.curve_view
    plot = cv.plot
    i = doc.index("left_elbow.z")
    ad.set_frame(10)
    studio.panel.row("left_elbow.z").spin.setValue(60.0)            # degrees in the UI
    assert cv.index == i and cv.combo.currentData() == "left_elbow.z"   # follows the last-edited semantic
    assert cv.combo.currentText() == "left elbow z (°)"                # shown by its human name (#16)
    assert plot.scale == pytest.approx(180 / math.pi)                   # an angle: drawn in degrees
    assert plot.edited[10, i] == doc.edited[10, i] != doc.original[10, i]
    assert np.array_equal(plot.original[:, i], doc.original[:, i])
    ad.set_frame(0)                                                      # the handle moves away from frame 10
    assert plot.frame == 0
    img = plot.grab().toImage()
    e = point(plot, 10, doc.edited[10, i])
    o = point(plot, 10, doc.original[10, i])
    assert abs(e.y() - o.y()) > 10
    assert is_orange(img.pixelColor(e))                                 # the edited point is drawn where it is
    assert not is_orange(img.pixelColor(o))                             # and not at the original value
    lo, hi = plot.value_range()
    assert lo < math.degrees(doc.original[:, i].min()) and hi > math.degrees(60.0 / 180 * math.pi) - 1e-9


def test_curve_drag_edits_document_merges_and_undoes(studio, qtbot):
    doc, ad, cv = studio.adapter.doc, studio.adapter, studio.curve_view
    plot, stack = cv.plot, ad.undo_stack
    i = doc.index("trans.x")                                             # not an angle: shown as is
    cv.combo.setCurrentIndex(i)
    assert plot.index == i and plot.scale == 1.0
    before = doc.edited[7, i]
    lo, hi = plot.value_range()
    seen = []
    cv.valueEdited.connect(lambda *a: seen.append(a))
    drag_point(qtbot, plot, 7, [4, 10, 20, 30])
    finals = [a[3] for a in seen]
    assert finals.count(False) >= 3 and finals[-1] is True              # several moves, then the release
    assert ad.frame == 7                                                 # pressing a point goes to its frame
    assert doc.edited[7, i] > before                                     # dragged up: a larger value
    assert doc.edited[7, i] == pytest.approx(seen[-1][2], abs=1e-12)   # the released value, in metres
    moved = 30 / plot.plot_rect().height() * (hi - lo)                   # 30 px on the axis held during the drag
    assert doc.edited[7, i] - before == pytest.approx(moved, abs=2 * doc.steps[i] + 2 * moved / 30)
    assert np.flatnonzero((doc.edited != doc.original).any(1)).tolist() == [7]
    assert stack.count() == 1                                            # one drag = one undo command
    assert [e.op for e in doc.edit_log()] == ["set"] and doc.edit_log()[0].first == 7
    stack.undo()
    assert np.array_equal(doc.edited, doc.original) and doc.edit_log() == []
    stack.redo()
    assert doc.edited[7, i] > before and len(doc.edit_log()) == 1


def test_click_on_curve_sets_frame_without_editing(studio, qtbot):
    doc, ad, plot = studio.adapter.doc, studio.adapter, studio.curve_view.plot
    r = plot.plot_rect()
    qtbot.mouseClick(plot, Qt.MouseButton.LeftButton, pos=QPoint(round(plot.x_of(12)), round(r.bottom() - 2)))
    assert ad.frame == 12 and studio.timeline.frame == 12 and plot.frame == 12
    p = point(plot, 20, doc.edited[20, plot.index])                      # a click right on a point: no edit
    qtbot.mouseClick(plot, Qt.MouseButton.LeftButton, pos=p)
    assert ad.frame == 20 and ad.undo_stack.count() == 0 and not doc.dirty


def test_shaded_range_follows_timeline(studio):
    plot = studio.curve_view.plot
    studio.timeline.set_selection(4, 9)
    assert plot.selection == (4, 9)
    y = round(plot.plot_rect().bottom() - 2)

    def pixels():
        img = plot.grab().toImage()
        return img.pixelColor(round(plot.x_of(6)), y), img.pixelColor(round(plot.x_of(15)), y)
    inside, outside = pixels()
    assert inside != outside and inside.blue() > outside.blue()        # the blue band
    studio.timeline.set_selection(12, 20)
    inside, outside = pixels()
    assert plot.selection == (12, 20) and inside.blue() < outside.blue()
    studio.timeline.clear_selection()
    inside, outside = pixels()
    assert plot.selection is None and inside == outside


def test_range_drag_on_curve_offsets_the_selection(studio, qtbot):
    doc, ad, cv = studio.adapter.doc, studio.adapter, studio.curve_view
    i = doc.index("head.y")
    cv.set_index(i)
    studio.timeline.set_selection(5, 10)
    drag_point(qtbot, cv.plot, 6, [6, 12, 24])
    d = doc.edited[:, i] - doc.original[:, i]
    assert np.all(d[5:11] > 0) and np.allclose(d[5:11], d[6]) and np.all(d[:5] == 0) and np.all(d[11:] == 0)
    assert ad.undo_stack.count() == 1
    log = doc.edit_log()
    assert len(log) == 1 and (log[0].op, log[0].first, log[0].last) == ("offset", 5, 10)   # folded drag


def test_saved_edit_list_replays_to_studio_semantics(studio, qtbot, tmp_path):
    from app import file_ops
    doc, ad = studio.adapter.doc, studio.adapter
    src = doc.path
    row = studio.panel.row("left_elbow.z")
    drag(row, [row.slider.value() + k for k in (3, 9, 14)])     # set on frame 0
    ad.set_frame(3)
    studio.curve_view.set_index(doc.index("rot.y"))
    drag_point(qtbot, studio.curve_view.plot, 3, [5, 15])               # curve drag on frame 3
    studio.timeline.set_selection(8, 16)
    ad.set_frame(9)
    row = studio.panel.row("right_wrist.x")
    drag(row, [row.slider.value() + k for k in (2, 5, -4)])     # offsets over 8..16
    ad.set_range(doc.index("trans.z"), 2, 25, offset=0.37, ease_in=5, ease_out=3)
    ad.mirror()                                                          # 8..16
    ad.set_frame(3)
    studio.timeline.clear_selection()
    studio.actions["copy_pose"].trigger()
    studio.timeline.set_selection(20, 24)
    ad.set_frame(22)
    studio.actions["paste_pose"].trigger()
    studio.panel.reset_buttons["left_elbow"].click()                     # columns revert on 20..24
    ej = tmp_path / "in.json"
    ej.write_text(json.dumps({"edits": [{"semantic": "head.x", "frames": [0, 29], "offset": 7, "unit": "deg"}]}))
    assert file_ops.apply_edit_list_dialog(studio, ej)
    ad.set_frame(14)
    studio.actions["revert_frame"].trigger()                             # whole frame 14
    ad.set_frame(0)
    studio.panel.row("loc.w").spin.setValue(0.9)
    stack_len = ad.undo_stack.count()
    ad.undo_stack.undo()                                                 # the last edit is not in the list
    assert ad.undo_stack.index() == stack_len - 1

    saved = tmp_path / "studio.edits.json"
    assert file_ops.save_edit_list_dialog(studio, saved)
    data = json.loads(saved.read_text())
    assert data["ihvc_edits"] == 1 and not any(e.get("semantic") == "loc.w" for e in data["edits"])
    ops = {next(k for k in ("mirror", "revert", "offset", "value") if k in e) for e in data["edits"]}
    assert ops == {"mirror", "revert", "offset", "value"}
    out = tmp_path / "replayed.ihvc"
    assert cli.main(["edit", str(src), "--edits", str(saved), "-o", str(out)]) == 0
    assert not np.array_equal(doc.edited, doc.original)
    assert np.array_equal(container.read(out).semantics(), doc.edited)
    # The engine path the CLI uses, straight from the log, agrees as well.
    from engine.studio.edits import apply_to_bitstream
    assert np.array_equal(apply_to_bitstream(container.read(src), E.load(saved)).semantics(), doc.edited)


def test_undo_redo_keep_the_log_in_step(studio):
    doc, ad = studio.adapter.doc, studio.adapter
    stack = ad.undo_stack
    studio.panel.row("head.z").spin.setValue(12.0)
    ad.mirror()
    assert [e.op for e in doc.edit_log()] == ["set", "mirror"]
    stack.undo()
    assert [e.op for e in doc.edit_log()] == ["set"]
    stack.redo()
    assert [e.op for e in doc.edit_log()] == ["set", "mirror"]
    stack.undo()
    stack.undo()
    assert doc.edit_log() == []
    # A slider dragged away and back is dropped by the undo stack: its records leave the log too.
    row = studio.panel.row("left_shoulder.y")
    s = row.slider.value()
    drag(row, [s + 4, s + 8, s])
    assert stack.count() == 0 and doc.edit_log() == [] and doc._log == []
    ad.set_range(doc.index("loc.cy"), 0, 5, value=0.6)
    assert [(e.op, e.semantic) for e in doc.edit_log()] == [("set", "loc.cy")]


def test_edit_log_engine_only_and_compaction():
    doc = Document(opaque_bitstream(20))
    i = doc.index("head.x")
    for v in (0.1, 0.12, 0.3333):
        doc.set_value(4, i, v)
    for d in (0.04, 0.06, -0.1):                          # whole grid steps that add up to nothing
        doc.set_range(i, 2, 9, offset=d)
    doc.set_range(i, 0, 19, offset=0.013)                 # off the grid: kept as it is
    assert len(doc._log) == 7
    log = doc.edit_log()
    assert [(e.op, e.amount) for e in log] == [("set", 0.34), ("offset", 0.013)]
    replay = E.apply_edits(doc.original, doc.original, doc.names, doc.steps, E.loads(E.dumps(log)))
    assert np.array_equal(replay, doc.edited)
    doc.drop_edits([E.Edit("mirror", 0, 3)])              # not the log's end: the log is refused, not wrong
    with pytest.raises(ValueError):
        doc.edit_log()


def test_one_frame_and_constant_curves(qtbot):
    cv = CurveView()
    qtbot.addWidget(cv)
    cv.resize(500, 180)
    cv.show()
    cv.plot.grab()                                        # nothing loaded yet: paints a message
    names = ("head.x", "loc.cx")
    cv.set_semantics(names, np.array([0.02, 0.002]))
    orig = np.array([[0.1, 0.5]])
    cv.set_curves(orig, orig.copy())
    cv.set_index(1)
    plot = cv.plot
    lo, hi = plot.value_range()
    assert hi > lo and lo < 0.5 < hi                      # a band around the constant value
    assert plot.x_of(0) == pytest.approx(plot.plot_rect().center().x())
    plot.grab()
    seen = []
    cv.valueEdited.connect(lambda *a: seen.append(a))
    cv.frameClicked.connect(lambda f: seen.append(("frame", f)))
    drag_point(qtbot, plot, 0, [10, 20])
    assert seen[0] == ("frame", 0)
    edits = [s for s in seen if s[0] != "frame"]
    assert edits and all(s[:2] == (0, 1) for s in edits) and edits[-1][3] is True
    assert all(not s[3] for s in edits[:-1]) and edits[-1][2] > 0.5
    assert abs(edits[-1][2] / 0.002 - round(edits[-1][2] / 0.002)) < 1e-9    # snapped to the grid
    flat = np.zeros((5, 2))
    cv.set_curves(flat, flat.copy())                      # all zeros: still a usable axis
    lo, hi = plot.value_range()
    assert hi > lo
    plot.grab()
