"""Compare modes (wipe, difference heat map) and draft previews while a slider is dragged.

The image functions are tested without Qt; the studio tests use conftest's fake decoder, here in a
variant that can decode small frames (``scaled``) and records the size of every frame it makes."""
from __future__ import annotations

import numpy as np
import pytest

from editor_widgets.compare_images import (
    INFERNO_LUT, INVENTED_ALPHA, INVENTED_COLOUR, difference_heatmap, difference_map, invented_tint, match_size,
    wipe_column, wipe_composite,
)

from .conftest import FakeDecoder


def two_images(h=20, w=30):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return a, b


# --- pure numpy ---------------------------------------------------------------------------------

@pytest.mark.parametrize("split", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_wipe_original_left_edited_right(split):
    a, b = two_images()
    out = wipe_composite(a, b, split)
    x = wipe_column(a.shape[1], split)
    assert x == round(split * a.shape[1])
    assert np.array_equal(out[:, :x], a[:, :x])
    assert np.array_equal(out[:, x:], b[:, x:])
    assert out.shape == a.shape and out.dtype == np.uint8


def test_wipe_fits_a_smaller_edited_frame_and_clamps():
    a, _ = two_images(20, 30)
    small = np.full((10, 15, 3), 7, np.uint8)
    out = wipe_composite(a, small, 0.5)
    assert out.shape == a.shape and np.all(out[:, 15:] == 7) and np.array_equal(out[:, :15], a[:, :15])
    assert np.array_equal(wipe_composite(a, small, -3), np.full_like(a, 7))
    assert np.array_equal(wipe_composite(a, small, 7), a)


def test_heatmap_zero_where_equal_brightest_at_largest_difference():
    a = np.full((16, 16, 3), 100, np.uint8)
    b = a.copy()
    b[2:5, 3:6] = 140                      # difference 40
    b[10, 12] = (160, 100, 100)            # difference 60 in one channel: mean 20
    b[12, 1] = 190                         # the largest: 90
    heat, peak = difference_heatmap(a, b)
    assert peak == pytest.approx(90.0)
    assert np.all(heat[0, 0] == INFERNO_LUT[0]) and np.all(heat[15, 15] == INFERNO_LUT[0])
    assert np.array_equal(heat[12, 1], INFERNO_LUT[255])
    lum = heat.astype(float).sum(-1)
    assert np.unravel_index(lum.argmax(), lum.shape) == (12, 1)
    assert lum[3, 4] > lum[10, 12] > lum[0, 0]                   # monotone in the difference
    assert difference_map(a, b)[10, 12] == pytest.approx(20.0)   # mean over RGB


def test_heatmap_of_equal_frames_is_all_zero_colour_and_noise_is_not_stretched():
    a, _ = two_images()
    heat, peak = difference_heatmap(a, a.copy())
    assert peak == 0.0 and np.all(heat == INFERNO_LUT[0])
    b = a.astype(int)
    b[0, 0, 0] = (b[0, 0, 0] + 3) % 256 if b[0, 0, 0] < 253 else b[0, 0, 0] - 3
    heat, peak = difference_heatmap(a, b.astype(np.uint8), min_scale=8.0)
    assert peak == pytest.approx(1.0)
    assert not np.array_equal(heat[0, 0], INFERNO_LUT[255])      # 1 level of 8: dim, not full scale


def test_lut_is_inferno():
    assert INFERNO_LUT.shape == (256, 3) and INFERNO_LUT.dtype == np.uint8
    matplotlib = pytest.importorskip("matplotlib")
    ref = matplotlib.colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255
    assert np.abs(INFERNO_LUT.astype(float) - ref).max() <= 2.0
    assert (INFERNO_LUT.astype(int).sum(1)[1:] >= INFERNO_LUT.astype(int).sum(1)[:-1] - 1).all()


def test_match_size_nearest():
    a = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    up = match_size(a, (8, 12))
    assert up.shape == (8, 12, 3) and np.array_equal(up[::2, ::2], a)
    assert match_size(a, (4, 6)) is a


# --- the engine's draft decoder ---------------------------------------------------------------

def test_decoder_scaled_draft_is_small_and_close_to_the_full_frame():
    from engine.synthesis.decoder import Decoder

    from .test_decoder import BoxBody, make_stream
    bs = make_stream()
    body = BoxBody()
    full = Decoder(bs, device="cpu", body_model=body)
    draft = full.scaled(32)
    assert (draft.height, draft.width) == (32, 32) and draft.body is body and draft.refiner is None
    row = bs.gops[0].frames[0].copy()
    row[27] += 0.125                                              # move the body: a real warp
    big = full.decode_frame(2, row).astype(float)
    small = draft.decode_frame(2, row).astype(float)
    assert small.shape == (32, 32, 3)
    down = big.reshape(32, 2, 32, 2, 3).mean((1, 3))
    assert np.abs(small - down).mean() < 6.0                      # the same picture, smaller
    moved = full.decode_frame(2, bs.gops[0].frames[0]).astype(float).reshape(32, 2, 32, 2, 3).mean((1, 3))
    assert np.abs(small - moved).mean() > np.abs(small - down).mean()   # and it follows the edit
    assert draft.decode_frame(0).shape == (32, 32, 3)             # the key picture, downscaled
    assert full.decode_frame(0).shape == (64, 64, 3)              # the full decoder is untouched


# --- the studio -------------------------------------------------------------------------------

class SizedFakeDecoder(FakeDecoder):
    """FakeDecoder that can decode drafts; ``log`` (shared with its drafts) records (H, W) per frame."""

    instances: list = []

    def __init__(self, bitstream, prefs=None, size=None, log=None):
        super().__init__(bitstream, prefs)
        self.size = size or (bitstream.height, bitstream.width)
        self.log = [] if log is None else log
        SizedFakeDecoder.instances.append(self)

    def scaled(self, max_side):
        s = min(1.0, max_side / max(self.bs.width, self.bs.height))
        return SizedFakeDecoder(self.bs, size=(round(self.bs.height * s), round(self.bs.width * s)), log=self.log)

    def decode_frame(self, index, semantics=None):
        self.log.append(self.size)
        return match_size(super().decode_frame(index, semantics), self.size)


@pytest.fixture
def sized_studio(studio, qtbot):
    """The studio fixture, re-opened with the size-recording fake decoder."""
    SizedFakeDecoder.instances = []
    studio.preview.decoder_factory = SizedFakeDecoder
    studio.preview.reset_decoder()
    studio._refresh_frame()
    qtbot.waitUntil(lambda: studio.preview_pane.serial == studio.preview.serial, timeout=5000)
    return studio


def wait_shown(studio, qtbot):
    qtbot.waitUntil(lambda: studio.preview_pane.serial == studio.preview.serial, timeout=5000)


def test_compare_modes_show_the_expected_image(studio, qtbot):
    pane, doc = studio.preview_pane, studio.adapter.doc
    assert pane.mode == "side" and pane.stack.currentWidget() is not pane.wipe
    pane.set_mode("diff")
    # Nothing edited yet: no black heat map, side by side with a note (#16); the choice is kept.
    assert pane.mode == "diff" and pane.shown_mode == "side" and pane.stack.currentWidget() is not pane.heat
    assert pane.fallback.isVisible() and "side by side" in pane.fallback.text()
    studio.panel.row("left_elbow.z").spin.setValue(40.0)
    wait_shown(studio, qtbot)
    assert pane.stack.currentWidget() is pane.heat and not pane.fallback.isVisible()
    fake = FakeDecoder(doc.bitstream)
    orig_c = fake.decode_frame(0)[0, 0]
    edit_c = fake.decode_frame(0, doc.edited[0])[0, 0]
    assert not np.array_equal(orig_c, edit_c)
    peak = np.abs(edit_c.astype(int) - orig_c.astype(int)).mean()
    assert pane.heat.peak == pytest.approx(peak)
    assert f"{peak:.0f} / 255" in pane.heat.legend
    assert np.all(pane.heat.image == INFERNO_LUT[255 if peak >= 8 else int(round(peak / 8 * 255))])

    pane.set_mode("wipe")
    assert pane.stack.currentWidget() is pane.wipe
    img = pane.wipe.image
    x = wipe_column(img.shape[1], pane.wipe.split)
    assert np.all(img[:, :x] == orig_c) and np.all(img[:, x:] == edit_c)
    # What is painted: original colour left of the divider, edited right of it.
    qtbot.waitExposed(pane.wipe)
    grab = pane.wipe.grab().toImage()
    r = pane.wipe.image_rect()
    y = r.top() + r.height() // 4
    left = grab.pixelColor(r.left() + r.width() // 4, y)
    right = grab.pixelColor(r.left() + 3 * r.width() // 4, y)
    assert (left.red(), left.green(), left.blue()) == tuple(int(c) for c in orig_c)
    assert (right.red(), right.green(), right.blue()) == tuple(int(c) for c in edit_c)
    # The mouse moves the divider: a press at a quarter, then a drag past the right edge.
    from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication
    qtbot.mousePress(pane.wipe, Qt.MouseButton.LeftButton, pos=QPoint(r.left() + r.width() // 4, r.center().y()))
    assert pane.wipe.split == pytest.approx(0.25, abs=0.02)
    x = wipe_column(img.shape[1], pane.wipe.split)
    assert np.all(pane.wipe.image[:, :x] == orig_c) and np.all(pane.wipe.image[:, x:] == edit_c)
    move = QMouseEvent(QEvent.Type.MouseMove, QPointF(r.right() + 5, r.center().y()), QPointF(),
                       Qt.MouseButton.NoButton, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(pane.wipe, move)
    assert pane.wipe.split == 1.0 and np.all(pane.wipe.image == orig_c)


def test_invented_tint_marks_only_the_guessed_pixels():
    a, _ = two_images(20, 30)
    mask = np.zeros((10, 15), bool)                  # half size: fitted to the frame first
    mask[:5, :5] = True
    out, share = invented_tint(a, mask)
    big = match_size(mask, a.shape[:2])
    assert big.sum() == 100 and share == pytest.approx(100 / 600)
    assert np.array_equal(out[~big], a[~big])
    want = np.round((1 - INVENTED_ALPHA) * a[big].astype(np.float32) + INVENTED_ALPHA * INVENTED_COLOUR)
    assert np.array_equal(out[big], want.astype(np.uint8))
    assert invented_tint(a, np.zeros((20, 30), bool))[1] == 0.0


class GuessingFakeDecoder(FakeDecoder):
    """The fake decoder, saying which pixels it guessed: the left quarter of an edited frame, none of a
    frame decoded as coded."""
    tells_invented = True

    def decode_frame(self, index, semantics=None, with_invented=False):
        img = super().decode_frame(index, semantics)
        if not with_invented:
            return img
        guess = np.zeros(img.shape[:2], bool)
        if semantics is not None:
            guess[:, :img.shape[1] // 4] = True
        return img, guess


def test_invented_mode_tints_what_the_decoder_guessed(studio, qtbot):
    pane = studio.preview_pane
    pane.set_mode("invented")
    # conftest's fake decoder does not say what it guessed: side by side, and why.
    assert pane.shown_mode == "side" and "does not say" in pane.fallback.text()
    studio.preview.decoder_factory = GuessingFakeDecoder
    studio.preview.reset_decoder()
    studio._refresh_frame()
    wait_shown(studio, qtbot)
    assert pane.stack.currentWidget() is pane.invented and not pane.fallback.isVisible()
    assert pane.invented.share == 0.0 and "invented" not in pane.status.text()   # nothing edited: every pixel seen
    studio.panel.row("left_elbow.z").spin.setValue(40.0)
    wait_shown(studio, qtbot)
    assert pane.invented.share == pytest.approx(0.25)
    assert "25.0 % invented" in pane.status.text()
    pane.set_mode("side")                                    # said in every mode
    assert "25.0 % invented" in pane.status.text()
    edited = GuessingFakeDecoder(studio.adapter.doc.bitstream).decode_frame(0, studio.adapter.doc.edited[0])
    w = edited.shape[1] // 4
    assert np.array_equal(pane.invented.image[:, w:], edited[:, w:])
    assert not np.array_equal(pane.invented.image[:, :w], edited[:, :w])


def test_compare_mode_persists_in_preferences(studio):
    from app.preferences import Preferences
    studio.preview_pane.mode_box.setCurrentIndex(2)              # what a user's pick does
    assert studio.prefs.compare_mode == "diff"
    assert Preferences.load().compare_mode == "diff"             # the fixture's QSettings folder
    with pytest.raises(ValueError):
        studio.preview_pane.set_mode("overlay")


def drag_to(row, ticks):
    row.slider.setSliderDown(True)
    for t in ticks:
        row.slider.setValue(t)


def test_drag_decodes_drafts_release_decodes_full(sized_studio, qtbot):
    studio = sized_studio
    pane, svc = studio.preview_pane, studio.preview
    bs = studio.adapter.doc.bitstream
    side = svc.draft_side()
    assert side == 24                                             # half the 48 px clip (< 192, < 384/2)
    log = SizedFakeDecoder.instances[0].log
    log.clear()
    row = studio.panel.row("head.y")
    s = row.slider.value()
    drag_to(row, [s + 4])
    wait_shown(studio, qtbot)
    assert pane.draft and not pane.draft_label.isHidden() and "draft" in pane.status.text()
    assert pane.edited.image.shape[:2] == (24, 24) and pane.original.image.shape[:2] == (24, 24)
    assert log and set(log) == {(24, 24)}                         # only drafts while dragging
    drag_to(row, [s + 8])
    wait_shown(studio, qtbot)
    assert pane.draft and set(log) == {(24, 24)}
    n_drafts = len(log)
    row.slider.setSliderDown(False)
    row.slider.sliderReleased.emit()                              # release at the same value
    wait_shown(studio, qtbot)
    assert not pane.draft and pane.draft_label.isHidden()
    assert pane.edited.image.shape[:2] == (bs.height, bs.width)
    assert log[n_drafts:] and set(log[n_drafts:]) == {(48, 48)}  # the release decodes at full size
    # Draft and full frames live side by side in the cache, under different keys.
    i = studio.adapter.doc.index("head.y")
    edited_keys = [k for k in svc.cache.keys() if k[0] == "edited" and k[1] == 0]
    sizes = {k[-1] for k in edited_keys}
    assert sizes == {24, None}
    final_row = studio.adapter.doc.edited[0].tobytes()
    same_row = [k for k in edited_keys if k[2] == final_row]
    assert {k[-1] for k in same_row} == {24, None}               # the same edit, cached twice
    shapes = {k[-1]: svc.cache.get(k)[0].shape[:2] for k in same_row}
    assert shapes == {24: (24, 24), None: (48, 48)}
    assert studio.adapter.doc.edited[0, i] == pytest.approx((s + 8) * 0.02)


def test_draft_cache_hit_and_no_draft_without_scaled(studio, qtbot):
    """A decoder without ``scaled`` gets full frames during a drag, and they are not called drafts."""
    pane = studio.preview_pane
    row = studio.panel.row("head.x")
    s = row.slider.value()
    drag_to(row, [s + 3])
    wait_shown(studio, qtbot)
    assert not pane.draft and pane.edited.image.shape[:2] == (48, 48)
    row.slider.setSliderDown(False)
    row.slider.sliderReleased.emit()
    wait_shown(studio, qtbot)
    assert not pane.draft
