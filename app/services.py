"""Preview and mesh services: engine calls (decoder, body model) off the GUI thread.

    PreviewService.request(frame, original_row, edited_row, draft=False) -> serial
        ready(serial, frame, original_rgb, edited_rgb, draft) for the newest request only
        draft: decode both frames small (``draft_side``) through ``decoder.scaled`` (while a slider
        is dragged); full-size and draft frames are cached under different keys
    MeshService.request(frame, key, original_row, edited_row)
        ready(frame, faces, vertices, ghost_vertices)

The decoder and the body model are created lazily *inside* the worker thread
(the first decode or model load can take seconds; the GUI keeps running).
"""
from __future__ import annotations


import numpy as np
from PySide6.QtCore import QObject, Signal

from .workers import FrameCache, LatestWorker


def default_decoder_factory(bitstream, prefs):
    """The decoder ``decode`` would use (engine.synthesis.decoder.open_decoder), on the preferred device.

    "learned" takes the shipped refiner; when it is missing or unusable the analytic decoder
    runs and ``decoder.note`` says why (the preview header shows it): never a silent fallback.
    """
    from engine.synthesis.decoder import open_decoder
    device = None if prefs.device == "auto" else prefs.device
    return open_decoder(bitstream, device=device, analytic=prefs.decoder != "learned")


def default_body_model_factory(bitstream, prefs):
    from engine.codec.bitstream import BODY_MODEL_NAMES
    from engine.synthesis.body import load_body_model
    name = BODY_MODEL_NAMES.get(bitstream.body_model, "anny")
    return load_body_model(name, device=None if prefs.device in ("auto", "cuda") else prefs.device)


def _resize(rgb: np.ndarray, size: int | None) -> np.ndarray:
    """Nearest-neighbour downscale to at most size x size (display only)."""
    if not size or max(rgb.shape[:2]) <= size:
        return rgb
    h, w = rgb.shape[:2]
    s = size / max(h, w)
    ys = (np.arange(int(h * s)) / s).astype(int)
    xs = (np.arange(int(w * s)) / s).astype(int)
    return rgb[ys][:, xs]


DRAFT_MAX_SIDE = 192    # measured on the sample (384 px, analytic, CPU): ~2x faster per frame


class PreviewService(QObject):
    ready = Signal(int, int, object, object, bool, object)   # ..., draft, the edited frame's invented pixels or None
    failed = Signal(object)

    @property
    def note(self) -> str:
        return getattr(self._decoder, "note", "") or ""

    def __init__(self, prefs, decoder_factory=None, parent=None, cache_items: int = 96):
        super().__init__(parent)
        self.prefs = prefs
        self.decoder_factory = decoder_factory or default_decoder_factory
        self.cache = FrameCache(cache_items)
        self.serial = 0
        self.emitted = 0             # serial of the newest result handed to the window
        self.generation = 0
        self._bitstream = None
        self._decoder = None
        self._decoder_gen = -1
        self._draft_decoder = None     # decoder.scaled(draft_side), built with the decoder
        self.last_draft = False        # the newest request asked for a draft
        self.worker = LatestWorker(self._handle, self)
        self.worker.done.connect(self._done)
        self.worker.failed.connect(lambda req, exc: self.failed.emit(exc))

    def set_bitstream(self, bitstream):
        self.generation += 1
        self._bitstream = bitstream
        self.cache.clear()

    def invalidate(self, frames):
        self.cache.drop_frames(frames, "edited")

    def reset_decoder(self):
        """Preferences changed: build a new decoder on the next request."""
        self.generation += 1
        self.cache.clear()

    def draft_side(self, bitstream=None) -> int:
        """Longest side of a draft frame: half the preview size, at most DRAFT_MAX_SIDE, and at most
        half the coded size (a draft must cost clearly less than the full frame to be worth showing)."""
        bs = bitstream if bitstream is not None else self._bitstream
        side = min(DRAFT_MAX_SIDE, int(self.prefs.preview_size) // 2)
        if bs is not None:
            side = min(side, max(bs.width, bs.height) // 2)
        return max(16, side)

    def request(self, frame: int, original_row: np.ndarray, edited_row: np.ndarray, draft: bool = False) -> int:
        self.serial += 1
        self.last_draft = bool(draft)
        self.worker.submit((self.serial, self.generation, self._bitstream, int(frame),
                            np.array(original_row, float), np.array(edited_row, float), bool(draft)))
        return self.serial

    # --- worker thread ----------------------------------------------------------------------------
    def _decode(self, kind, frame, row, semantics, decoder=None, size=None):
        """size: None for the full frame, else the draft side (part of the key: never mixed up).
        Returns (image, invented): invented, the H x W bool of the pixels no key picture saw (None from
        a decoder that does not say); it comes with the frame, at no extra decoding."""
        key = (kind, frame, row.tobytes(), self._decoder_gen, size)
        got = self.cache.get(key)
        if got is None:
            dec = decoder if decoder is not None else self._decoder
            size = size or self.prefs.preview_size
            guess = None
            if getattr(dec, "tells_invented", False):
                img, guess = dec.decode_frame(frame, semantics, with_invented=True)
                guess = _resize(np.asarray(guess, bool), size)
            else:
                img = dec.decode_frame(frame, semantics)
            got = (_resize(np.asarray(img), size), guess)
            self.cache.put(key, got)
        return got

    def _handle(self, req):
        serial, gen, bitstream, frame, orig_row, edit_row, draft = req
        if self._decoder is None or self._decoder_gen != gen:
            self._decoder = self._draft_decoder = None
            self._decoder = self.decoder_factory(bitstream, self.prefs)
            self._decoder_gen = gen
        draft_dec, size = None, None
        if draft:
            side = self.draft_side(bitstream)
            if self._draft_decoder is None and hasattr(self._decoder, "scaled"):
                self._draft_decoder = self._decoder.scaled(side)
            draft_dec = self._draft_decoder
            size = side if draft_dec is not None else None   # no scaled(): full frames, not labelled draft
        # In a draft the original is small too, so that wipe and difference compare like with like;
        # it is decoded once per frame and drag (the cache holds it).
        original, guessed = self._decode("original", frame, orig_row, None, draft_dec, size)
        if np.array_equal(orig_row, edit_row):
            edited, invented = original, guessed
        else:
            edited, invented = self._decode("edited", frame, edit_row, edit_row, draft_dec, size)
        return serial, frame, original, edited, size is not None, invented

    def _done(self, req, result):
        serial, frame, original, edited, draft, invented = result
        # Results only move forward: one older than what was already shown is dropped. A result
        # overtaken by a newer *request* is still shown: during playback every decode finishes
        # after the next frame was asked for, and dropping those left the preview frozen
        # (17 previews shown in 60 s of playback before, bench --preview).
        if serial > self.emitted:
            self.emitted = serial
            self.ready.emit(serial, frame, original, edited, draft, invented)

    def stop(self):
        self.worker.stop()


def posed_vertices(model, key, rows: np.ndarray) -> np.ndarray:
    """Body-frame vertices rotated by each row's ``rot``: rows B x D -> B x V x 3 (y up, facing +z)."""
    import torch

    from engine.synthesis.camera import axis_angle_to_matrix
    from engine.codec.semantics import FrameSemantics
    poses, rots = [], []
    for r in rows:
        full = key.with_frame(FrameSemantics.from_array(r))
        poses.append(full.body_pose)
        rots.append(full.rot)
    body_pose = torch.as_tensor(np.stack(poses), dtype=torch.float32)
    betas = torch.as_tensor(np.asarray(key.betas, np.float32)[None].repeat(len(rows), 0))
    with torch.no_grad():
        out = model.forward(body_pose, betas)
        v = out.vertices.detach().float().cpu()
        R = axis_angle_to_matrix(torch.as_tensor(np.stack(rots), dtype=torch.float32))
        v = v @ R.transpose(-1, -2)
    return v.numpy()


class MeshService(QObject):
    ready = Signal(int, object, object, object)     # frame, faces, vertices, ghost
    failed = Signal(object)
    status = Signal(str)

    def __init__(self, prefs, body_model_factory=None, parent=None):
        super().__init__(parent)
        self.prefs = prefs
        self.factory = body_model_factory or default_body_model_factory
        self._model = None
        self._model_key = None
        self.serial = 0
        self.last = None   # (frame, faces, vertices, ghost) of the newest result
        self.worker = LatestWorker(self._handle, self)
        self.worker.done.connect(self._done)
        self.worker.failed.connect(lambda req, exc: self.failed.emit(exc))

    def request(self, bitstream, frame: int, original_row, edited_row):
        self.serial += 1
        g, _ = bitstream.gop_of(frame)
        self.worker.submit((self.serial, bitstream, g.key, int(frame), np.array(original_row, float),
                            np.array(edited_row, float)))

    def _handle(self, req):
        serial, bitstream, key, frame, orig_row, edit_row = req
        mk = (id(bitstream), bitstream.body_model)
        if self._model is None or self._model_key != mk:
            self.status.emit("loading body model…")
            self._model = self.factory(bitstream, self.prefs)
            self._model_key = mk
        v = posed_vertices(self._model, key, np.stack([edit_row, orig_row]))
        faces = np.asarray(self._model.faces.cpu() if hasattr(self._model.faces, "cpu") else self._model.faces)
        return serial, frame, faces, v[0], v[1]

    def _done(self, req, result):
        serial, frame, faces, verts, ghost = result
        if serial == self.serial:
            self.last = (frame, faces, verts, ghost)
            self.ready.emit(frame, faces, verts, ghost)

    def stop(self):
        self.worker.stop()
