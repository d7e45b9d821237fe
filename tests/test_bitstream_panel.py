"""Bitstream panel, verify-after-save and plausibility warnings (engine parts need no display;
studio parts use conftest.studio with the fake decoder / body model)."""
import json

import numpy as np
import pytest
from PySide6.QtCore import Qt

import main as cli
from engine.codec import container
from engine.studio import plausibility
from engine.studio import verify
from engine.codec.rate import pending_change, rate_of
from engine.studio.document import Document
from engine.studio.plausibility import FrameMesh

from .conftest import opaque_bitstream

pytestmark = pytest.mark.timeout(60)


def inspect_json(path, capsys) -> dict:
    capsys.readouterr()
    assert cli.main(["inspect", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def kinds(warnings, kind):
    return [w for w in warnings if w.kind == kind]


# --- panel figures ----------------------------------------------------------------------------------

def test_panel_matches_inspect(studio, tmp_path, capsys):
    path = tmp_path / "cam.ihvc"
    container.write(opaque_bitstream(40, 20, camera=True, seed=3), path)
    assert studio.open_path(path)
    info = inspect_json(path, capsys)
    s, bp = studio.bitstream_panel.stats, studio.bitstream_panel
    b = info["bits_per_frame"]
    assert s.bytes == info["bytes"] == path.stat().st_size
    keys = sum(len(g.key_picture.payload) for g in studio.adapter.doc.bitstream.gops)
    assert s.key_picture_bpf == pytest.approx(b["key_picture"]) == pytest.approx(8 * keys / 40)
    assert s.semantics_bpf == pytest.approx(b["semantics"])
    assert s.camera_bpf == pytest.approx(b["camera"]) and s.camera_bpf > 0
    assert s.total_bpf == pytest.approx(b["total"])
    assert s.kbps_at_25fps == pytest.approx(info["kbps_at_25fps"])
    assert s.kbps_at_file_fps == pytest.approx(info["kbps_at_file_fps"])
    # ... and the labels show them
    assert f"{info['bytes']:,} bytes" == bp.size_label.text()
    assert bp.rate_label.text() == f"{info['kbps_at_file_fps']:.2f} kbps at 25 fps"    # once: the file is 25 fps
    assert bp.sem_label.text() == f"{b['total'] - b['key_picture']:.1f} bits"
    assert bp.camera_label.text() == f"{b['camera']:.1f} bits"
    assert "cam.ihvc" in bp.file_label.text() and bp.pending_label.text() == "none"


def test_stats_of_unsaved_bitstream_use_the_writer():
    bs = opaque_bitstream()                       # never read from a file: no section sizes
    assert not bs.sizes
    assert rate_of(bs).bytes == len(container.to_bytes(bs))


def test_edit_changes_pending_size_debounced(studio, qtbot):
    doc, bp = studio.adapter.doc, studio.bitstream_panel
    emitted = []
    bp.refreshDue.connect(lambda: emitted.append(1))
    i = doc.index("left_shoulder.x")
    for k, f in enumerate(range(3, 13)):        # a burst of edits: a jagged, costly curve
        studio.adapter.set_frame(f)
        studio.adapter.set_value(i, 0.9 if k % 2 else -0.9)
    assert bp.pending_label.text() == "none"    # nothing yet: debounced
    qtbot.waitUntil(lambda: bp.pending_label.text() != "none", timeout=3000)
    qtbot.wait(400)
    assert len(emitted) == 1                    # ten edits, one recomputation
    want = len(container.to_bytes(doc.edited_bitstream())) - doc.path.stat().st_size
    assert want > 0 and bp.change.delta_bytes == want
    assert bp.pending_label.text().startswith(f"+{want} bytes (+{8 * want / doc.n_frames * 25 / 1000:.1f} kbps)")
    assert "10 edited frames" in bp.pending_label.text()
    studio.adapter.undo_stack.setIndex(0)       # all undone: back to no change
    bp.flush()
    assert bp.pending_label.text() == "none"


def test_size_change_text():
    bs = opaque_bitstream()
    edited = bs.semantics()
    edited[5, 3] += 1.0
    ch = pending_change(bs, edited)
    assert ch.delta_bytes == len(container.to_bytes(bs.with_semantics(edited))) - len(container.to_bytes(bs))
    assert ch.text() == f"{ch.delta_bytes:+d} bytes ({8 * ch.delta_bytes / 30 * 25 / 1000:+.1f} kbps)"


# --- verify after save ---------------------------------------------------------------------------------

def test_save_is_verified(studio, tmp_path):
    doc = studio.adapter.doc
    studio.adapter.set_frame(7)
    studio.panel.row("right_elbow.y").spin.setValue(40.0)
    out = tmp_path / "saved.ihvc"
    assert studio._save_to(out)
    size = out.stat().st_size
    assert studio.statusBar().currentMessage() == f"Saved and verified: {doc.n_frames} frames, {size} bytes"
    assert not studio.errors and not doc.dirty
    # the panel now describes the written file, and nothing is pending
    assert studio.bitstream_panel.stats.bytes == size
    assert studio.bitstream_panel.change.delta_bytes == 0


def _flip(path, data):
    b = bytearray(data)
    b[len(b) // 2] ^= 0x40
    path.write_bytes(bytes(b))


def _truncate(path, data):
    path.write_bytes(data[:-7])


@pytest.mark.parametrize("damage, says", [
    (_flip, "does not read back"),
    (_truncate, "does not read back"),
    ("semantics", "reads back right_elbow.y"),
    ("payload", "key picture at frame 15 differs"),
])
def test_damaged_write_is_reported(studio, tmp_path, monkeypatch, damage, says):
    doc = studio.adapter.doc
    studio.adapter.set_frame(7)
    studio.panel.row("right_elbow.y").spin.setValue(40.0)
    out = tmp_path / "saved.ihvc"
    out.write_bytes(b"the previous file")
    real = verify.write_file

    def bad_write(path, data):
        if damage == "semantics":                       # a writer that dropped the edits
            real(path, container.to_bytes(doc.bitstream))
        elif damage == "payload":                       # a writer that re-coded a key picture
            bs = doc.edited_bitstream()
            kp = bs.gops[1].key_picture
            bs.gops[1].key_picture = type(kp)(kp.codec, kp.qp, kp.width, kp.height, kp.payload[::-1])
            real(path, container.to_bytes(bs))
        else:
            damage(path, data)
    monkeypatch.setattr(verify, "write_file", bad_write)
    assert not studio._save_to(out)
    assert len(studio.errors) == 1 and says in studio.errors[0] and "\n" not in studio.errors[0]
    assert "saved.ihvc was not replaced" in studio.errors[0]
    assert studio.statusBar().currentMessage().startswith("Cannot save:")
    assert out.read_bytes() == b"the previous file"         # the old file survives
    assert list(tmp_path.glob(".saved*")) == []              # no temporary left behind
    assert doc.dirty and studio.adapter.needs_save           # still unsaved


def test_verify_written_accepts_a_good_file(tmp_path):
    bs = opaque_bitstream()
    path = tmp_path / "a.ihvc"
    container.write(bs, path)
    back = verify.verify_written(path, bs.semantics(), [g.key_picture.payload for g in bs.gops])
    assert back.n_frames == 30
    wrong = bs.semantics()
    wrong[29, 30] += bs.steps[30]
    with pytest.raises(verify.VerifyError, match="loc.h .* at frame 29"):
        verify.verify_written(path, wrong, [g.key_picture.payload for g in bs.gops])


# --- plausibility ----------------------------------------------------------------------------------

@pytest.mark.parametrize("camera", [False, True])
def test_unedited_and_gentle_edits_give_no_warnings(camera):
    doc = Document(opaque_bitstream(60, 20, camera=camera))
    assert plausibility.check(doc.original, doc.edited, doc.names) == []
    # an ordinary eased edit: a 23 degree head turn eased in and out over 12 frames
    doc.set_range(doc.index("head.y"), 5, 40, offset=0.4, ease_in=12, ease_out=12)
    doc.set_range(doc.index("loc.cx"), 10, 30, offset=0.05, ease_in=10, ease_out=10)
    assert doc.edited_frames().size > 0
    assert plausibility.check(doc.original, doc.edited, doc.names) == []


def test_elbow_bent_backwards_warns():
    doc = Document(opaque_bitstream())
    x, y = doc.index("left_elbow.x"), doc.index("left_elbow.y")
    # bent forward (along Anny's hinge, about -0.74 x - 0.67 y) by 80 degrees: plausible
    doc.set_value(10, x, -1.0)
    doc.set_value(10, y, -1.0)
    assert kinds(plausibility.check(doc.original, doc.edited, doc.names), "range") == []
    # the same amount backwards: the elbow hyperextends
    doc.set_value(10, x, 1.0)
    doc.set_value(10, y, 1.0)
    r = kinds(plausibility.check(doc.original, doc.edited, doc.names), "range")
    assert [(w.frame, w.subject) for w in r] == [(10, "left_elbow")] and "flexion" in r[0].message


def test_head_beyond_its_turn_warns():
    doc = Document(opaque_bitstream())
    doc.set_value(4, doc.index("head.y"), np.radians(120))
    r = kinds(plausibility.check(doc.original, doc.edited, doc.names), "range")
    assert [(w.frame, w.subject) for w in r] == [(4, "head")] and "turn" in r[0].message


def test_one_frame_spike_warns():
    doc = Document(opaque_bitstream())
    i = doc.index("right_shoulder.z")
    limit = plausibility.jump_thresholds(doc.original, doc.names)[i]
    doc.set_value(15, i, doc.original[15, i] + 0.5)
    j = kinds(plausibility.check(doc.original, doc.edited, doc.names), "jump")
    assert 0.5 > limit and [(w.frame, w.subject) for w in j] == [(15, "right_shoulder.z")]
    doc.revert(15)
    doc.set_value(15, i, doc.original[15, i] + 0.6 * limit)   # within the clip's own motion
    assert plausibility.check(doc.original, doc.edited, doc.names) == []


def test_box_out_of_frame_warns():
    doc = Document(opaque_bitstream())
    doc.set_value(20, doc.index("loc.cx"), 1.2)         # box 0.8 wide centred past the right edge
    doc.set_value(21, doc.index("loc.w"), 0.0)
    b = kinds(plausibility.check(doc.original, doc.edited, doc.names), "box")
    assert [w.frame for w in b] == [20, 21]
    assert "inside the frame" in b[0].message and "no size" in b[1].message


def test_box_that_no_longer_fits_the_mesh_warns():
    doc = Document(opaque_bitstream())
    rng = np.random.default_rng(0)
    sphere = rng.normal(size=(500, 3))
    sphere = 0.3 * sphere / np.linalg.norm(sphere, axis=1, keepdims=True)
    meshes = {12: FrameMesh(sphere, sphere, np.array([5.0, 5.0]))}
    tx = doc.index("trans.x")
    doc.set_value(12, tx, doc.original[12, tx] + 0.02)  # a small move keeps the body in its box
    assert kinds(plausibility.check(doc.original, doc.edited, doc.names, meshes=meshes), "box") == []
    doc.set_value(12, tx, doc.original[12, tx] + 0.8)   # at 5 m with focal 5 the body leaves its box
    b = kinds(plausibility.check(doc.original, doc.edited, doc.names, meshes=meshes), "box")
    assert {w.frame for w in b} == {12} and any("no longer fits" in w.message for w in b)


def test_timeline_and_list_show_warnings(studio, qtbot):
    ad, bp = studio.adapter, studio.bitstream_panel
    doc = ad.doc
    ad.set_frame(20)
    studio.panel.row("loc.cx").spin.setValue(1.2)
    ad.set_frame(5)
    studio.panel.row("right_shoulder.z").spin.setValue(np.degrees(doc.original[5, doc.index("right_shoulder.z")] + 0.5))
    qtbot.waitUntil(lambda: bool(studio.timeline.warning_frames), timeout=3000)
    bp.flush()
    assert studio.timeline.warning_frames == [5, 20]
    assert bp.warning_list.count() == len(bp.warnings) >= 2 and bp.warnings_title.text().startswith("Warnings (")
    assert {w.frame for w in bp.warnings} == {5, 20}
    row = [w.frame for w in bp.warnings].index(20)
    item = bp.warning_list.item(row)
    assert item.text().startswith("frame 20:")
    bp.warning_list.scrollToItem(item)
    rect = bp.warning_list.visualItemRect(item)
    qtbot.mouseClick(bp.warning_list.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert ad.frame == 20 and studio.timeline.frame == 20
    studio.actions["revert_frame"].trigger()             # fixing the box clears its warning
    bp.flush()
    assert studio.timeline.warning_frames == [5]


def test_studio_checks_the_box_against_the_posed_body(studio, qtbot):
    """The 3D view's posed body (FakeBody: a 0.3 m sphere) feeds the box check: moving the body
    0.8 m sideways inside an unchanged box pushes it out of the box."""
    doc, bp = studio.adapter.doc, studio.bitstream_panel
    qtbot.waitUntil(lambda: 0 in studio._meshes, timeout=10000)
    tx = doc.index("trans.x")
    studio.panel.row("trans.x").spin.setValue(doc.original[0, tx] + 0.02)
    bp.flush()
    assert [w for w in bp.warnings if w.kind == "box"] == []
    studio.panel.row("trans.x").spin.setValue(doc.original[0, tx] + 0.8)
    bp.flush()
    assert any(w.frame == 0 and "no longer fits" in w.message for w in bp.warnings)
    assert 0 in studio.timeline.warning_frames
