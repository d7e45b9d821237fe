import json

import numpy as np
import pytest

from engine.studio import edits as E
from engine.studio.document import Document
from engine.errors import IHVCError, InputError

from .conftest import opaque_bitstream


def test_range_with_easing_ends_middle_and_outside():
    bs = opaque_bitstream(40)
    doc = Document(bs)
    i = doc.index("left_shoulder.z")
    before = doc.edited.copy()
    doc.set_range(i, 10, 30, offset=0.5, ease_in=5, ease_out=5)
    after = doc.edited
    d = after[:, i] - before[:, i]
    assert 0 < d[10] < d[11] < 0.5 and 0 < d[30] < d[29] < 0.5   # eased ends are part of the edit (#16)
    # a small eased offset still moves both end frames (one grid step at least)
    small = Document(bs)
    small.set_range(i, 10, 30, offset=0.1, ease_in=12, ease_out=12)
    ds = small.edited[:, i] - before[:, i]
    assert ds[10] > 0 and ds[30] > 0 and np.all(ds[:10] == 0) and np.all(ds[31:] == 0)
    assert np.allclose(d[15:26], 0.5, atol=0.011)          # full offset in the middle (snapped)
    assert 0 < d[12] < 0.5 and 0 < d[28] < 0.5             # ramps in between
    assert np.all(d[:10] == 0) and np.all(d[31:] == 0)     # outside untouched
    others = np.delete(np.arange(doc.dims), i)
    assert np.array_equal(after[:, others], before[:, others])
    assert np.allclose(after / bs.steps, np.rint(after / bs.steps))   # on the quantization grid


def test_value_without_easing_covers_whole_range():
    doc = Document(opaque_bitstream(20))
    i = doc.index("loc.cx")
    doc.set_range(i, 3, 7, value=0.25)
    assert np.allclose(doc.edited[3:8, i], 0.25, atol=1e-9)
    assert np.array_equal(doc.edited[8:, i], doc.original[8:, i])


def test_mirror_twice_is_identity_and_swaps_arms():
    doc = Document(opaque_bitstream(20))
    before = doc.edited.copy()
    doc.mirror(0, 19)
    ls, rs = doc.index("left_shoulder.x"), doc.index("right_shoulder.x")
    assert np.array_equal(doc.edited[:, ls], before[:, rs])
    assert np.array_equal(doc.edited[:, rs + 1], -before[:, ls + 1])
    assert not np.array_equal(doc.edited, before)
    doc.mirror(0, 19)
    assert np.array_equal(doc.edited, before)


def test_json_round_trip_and_degrees(tmp_path):
    p = tmp_path / "e.json"
    p.write_text(json.dumps({"ihvc_edits": 1, "edits": [
        {"semantic": "head.y", "frames": [2, 8], "offset": 30, "unit": "deg", "ease_in": 2},
        {"mirror": True, "frames": 4}, {"revert": True, "frames": [0, 1]}]}))
    edits = E.load(p)
    assert edits[0].amount == pytest.approx(np.radians(30)) and edits[1].op == "mirror"
    E.save(edits, tmp_path / "f.json")
    assert E.load(tmp_path / "f.json") == edits


@pytest.mark.parametrize("item,needle", [
    ({"semantic": "nose.x", "frames": 1, "offset": 1}, "unknown semantic 'nose.x'"),
    ({"semantic": "head.x", "frames": [5, 500], "offset": 1}, "outside the clip"),
    ({"semantic": "head.x", "frames": 1}, "exactly one of"),
    ({"semantic": "loc.cx", "frames": 1, "offset": 1, "unit": "deg"}, "only applies to angles"),
    ({"semantic": "camera.zoom", "frames": 1, "offset": 1}, "no camera group"),
])
def test_bad_edits_are_one_line_errors(item, needle):
    bs = opaque_bitstream(20)
    with pytest.raises(InputError) as ei:
        edits = E.loads(json.dumps({"edits": [item]}), "e.json")
        E.check_all(edits, bs.names, bs.n_frames, "e.json")
    assert needle in str(ei.value) and "\n" not in str(ei.value)
    assert isinstance(ei.value, IHVCError)


def test_not_json():
    with pytest.raises(InputError, match="not valid JSON"):
        E.loads("{oops", "x.json")
