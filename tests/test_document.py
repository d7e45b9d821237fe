import numpy as np

from engine.studio.document import Document, export_semantics_csv, export_semantics_json

from .conftest import opaque_bitstream


def test_plan_apply_unapply_and_events():
    doc = Document(opaque_bitstream(20))
    seen, dirty = [], []
    doc.events.values_changed.connect(lambda f: seen.append(list(f)))
    doc.events.dirty_changed.connect(dirty.append)
    i = doc.index("head.x")
    ch = doc.plan_set_value(5, i, 0.333)
    assert not doc.dirty and doc.edited[5, i] == doc.original[5, i]      # plan does not change anything
    doc.apply(ch)
    assert doc.edited[5, i] == 0.34 and seen == [[5]] and dirty == [True]   # snapped to the 0.02 grid
    assert list(doc.edited_frames()) == [5]
    doc.unapply(ch)
    assert np.array_equal(doc.edited, doc.original) and dirty == [True, False]


def test_revert_paste_and_noop():
    doc = Document(opaque_bitstream(20))
    doc.set_range(0, 0, 19, offset=0.2)
    doc.revert(3, 5)
    assert np.array_equal(doc.edited[3:6], doc.original[3:6])
    assert not np.array_equal(doc.edited[6], doc.original[6])
    row = doc.edited[10].copy()
    doc.paste_pose([0, 1], row, group="pose")
    assert np.array_equal(doc.edited[0, :21], row[:21])
    assert np.array_equal(doc.edited[0, 21:], doc.edited[0, 21:])
    assert doc.plan_set_value(2, 0, doc.edited[2, 0]).empty


def test_export_semantics(tmp_path):
    doc = Document(opaque_bitstream(10))
    export_semantics_json(tmp_path / "s.json", doc.names, doc.edited, doc.fps)
    export_semantics_csv(tmp_path / "s.csv", doc.names, doc.edited)
    import json
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["names"][0] == "head.x" and np.allclose(data["frames"], doc.edited)
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0].startswith("frame,head.x") and len(lines) == 11


def test_save_keeps_key_picture_bytes(tmp_path):
    from engine.codec import container
    bs = opaque_bitstream(30)
    doc = Document(bs, None)
    doc.set_range(doc.index("right_elbow.y"), 5, 25, offset=-0.3, ease_in=3, ease_out=3)
    doc.save(tmp_path / "o.ihvc")
    assert not doc.dirty
    back = container.read(tmp_path / "o.ihvc")
    assert np.allclose(back.semantics(), doc.edited, atol=1e-9)
    assert [g.key_picture.payload for g in back.gops] == [g.key_picture.payload for g in bs.gops]
