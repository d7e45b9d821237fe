"""Preview and mesh services: engine calls (decoder, body model) off the GUI thread.

    PreviewService.request(frame, original_row, edited_row) -> serial
        ready(serial, frame, original_rgb, edited_rgb) for the newest request only
    MeshService.request(frame, key, original_row, edited_row)
        ready(frame, faces, vertices, ghost_vertices)

The decoder and the body model are created lazily *inside* the worker thread
(the first decode or model load can take seconds; the GUI keeps running).
"""
from __future__ import annotations

import inspect

import numpy as np
from PySide6.QtCore import QObject, Signal

from .workers import FrameCache, LatestWorker


def default_decoder_factory(bitstream, prefs):
    """engine.decoder.Decoder with the preferred device and mode.

    "learned" passes the trained refiner when the Decoder takes one (``refiner=``) and the
    weights are shipped; otherwise the analytic decoder is used and ``decoder.note`` says so.
    """
    from engine.decoder import Decoder
    device = None if prefs.device == "auto" else prefs.device
    kwargs = {"device": device}
    try:
        params = inspect.signature(Decoder).parameters
    except (TypeError, ValueError):
        params = {}
    note = ""
    if prefs.decoder == "learned":
        refiner = None
        if "refiner" in params:
            try:
                from engine.learned import load_refiner
                refiner = load_refiner(device=device, body_model=None)
            except Exception as exc:  # weights missing or unreadable: fall back, say so
                note = f"learned decoder unavailable ({exc}); analytic"
        if refiner is not None:
            kwargs["refiner"] = refiner
        elif not note:
            note = "learned decoder not available in this build; analytic"
    dec = Decoder(bitstream, **kwargs)
    dec.note = note
    return dec


def default_body_model_factory(bitstream, prefs):
    from engine.bitstream import BODY_MODEL_NAMES
    from engine.body_model import load_body_model
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


class PreviewService(QObject):
    ready = Signal(int, int, object, object)
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
        self.generation = 0
        self._bitstream = None
        self._decoder = None
        self._decoder_gen = -1
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

    def request(self, frame: int, original_row: np.ndarray, edited_row: np.ndarray) -> int:
        self.serial += 1
        self.worker.submit((self.serial, self.generation, self._bitstream, int(frame),
                            np.array(original_row, float), np.array(edited_row, float)))
        return self.serial

    # --- worker thread ----------------------------------------------------------------------------
    def _decode(self, kind, frame, row, semantics):
        key = (kind, frame, row.tobytes(), self._decoder_gen)
        img = self.cache.get(key)
        if img is None:
            img = _resize(np.asarray(self._decoder.decode_frame(frame, semantics)), self.prefs.preview_size)
            self.cache.put(key, img)
        return img

    def _handle(self, req):
        serial, gen, bitstream, frame, orig_row, edit_row = req
        if self._decoder is None or self._decoder_gen != gen:
            self._decoder = None
            self._decoder = self.decoder_factory(bitstream, self.prefs)
            self._decoder_gen = gen
        original = self._decode("original", frame, orig_row, None)
        if np.array_equal(orig_row, edit_row):
            edited = original
        else:
            edited = self._decode("edited", frame, edit_row, edit_row)
        return serial, frame, original, edited

    def _done(self, req, result):
        serial, frame, original, edited = result
        if serial == self.serial:                     # newest wins; older results are dropped
            self.ready.emit(serial, frame, original, edited)

    def stop(self):
        self.worker.stop()


def posed_vertices(model, key, rows: np.ndarray) -> np.ndarray:
    """Body-frame vertices rotated by each row's ``rot``: rows B x D -> B x V x 3 (y up, facing +z)."""
    import torch

    from engine.camera import axis_angle_to_matrix
    from engine.semantics import FrameSemantics
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
