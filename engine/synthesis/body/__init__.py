"""Body models behind one interface: Anny (default, open) and SMPL-X (licensed files).

Used by the encoder's fit and by the decoder. Conventions (see engine/synthesis/camera.py):

* Output is in the **body frame**: y up, the body facing +z, the pelvis (root
  joint) at the origin. ``rot`` / ``trans`` are *not* applied here;
  ``engine.synthesis.camera.project`` applies them.
* ``body_pose`` is B x 21 x 3 axis-angle in SMPL-X order
  (``engine.codec.semantics.BODY_JOINTS``). Each rotation is the joint's rotation
  relative to its parent, expressed in body-frame axes at the rest pose (the
  SMPL-X convention): e.g. a rotation about +z lifts the left arm sideways.
* ``joints`` is B x 22 x 3: the pelvis then the 21 body joints.
* ``betas`` is B x n_betas (or 1 x n_betas, broadcast), 0 = the model's mean body.

Anny (``name="anny"``, model id 1)
    Rest pose (pose = 0) is Anny's own rest pose, an **A-pose**: upright,
    facing the camera, legs straight, arms hanging about 45 degrees below
    horizontal with the elbows slightly bent forward. (SMPL-X's rest pose is a
    T-pose, so SMPL-X arm angles differ from Anny's by that fixed offset.)
    SMPL-X joints map onto Anny (MakeHuman) bones; the rotation is applied at
    the bone's head with Anny's "local-ref" parameterisation, which is exactly
    the SMPL-X convention above:

        left/right_hip -> upperleg01    left/right_knee -> lowerleg01
        left/right_ankle -> foot        left/right_foot -> toe*-1 (all five)
        spine1 -> spine04  spine2 -> spine02  spine3 -> spine01
        neck -> neck01     head -> head
        left/right_collar -> clavicle   left/right_shoulder -> upperarm01
        left/right_elbow -> lowerarm01  left/right_wrist -> wrist

    Other bones (twist bones, fingers, face) stay at rest. Joint positions are
    the posed heads of the mapped bones (feet: mean of the toe heads).
    ``betas`` (6) are Anny's phenotype parameters minus 0.5, in the order
    gender, age, muscle, weight, height, proportions; each phenotype is
    clamped to [0, 1], so betas live in [-0.5, 0.5].
    Faces: 27,420 triangles over 13,718 vertices. The first construction parses
    the assets (about a minute) and caches them under ``ANNY_CACHE_DIR``
    (default ``~/.cache/ihvc/anny``).

SMPL-X (``name="smplx"``, model id 2)
    ``path`` is a folder holding ``SMPLX_NEUTRAL.npz`` (or the .npz itself),
    loaded through the ``smplx`` package; 10 betas; rest pose is SMPL-X's T-pose.

API
    load_body_model(name="anny", path=None, device=None) -> BodyModel   (cached per (name, path, device))
    model.forward(body_pose B x 21 x 3, betas B x K | None) -> BodyOutput(vertices, joints)
    model.joints(...) -> B x 22 x 3;  model.landmarks(...) -> B x len(LANDMARK_NAMES) x 3
    model.joints_and_landmarks(...)   (the fit's fast path: one reduced forward-kinematics pass)
    model.faces (F x 3 int64), model.part_labels() (V,) in 0..21, model.n_betas, model.model_id
    body_model_for_id(bitstream.body_model, path, device) -> BodyModel

Speed (Anny, CPU, 1 thread): forward B=1 about 3 ms (rest shape cached for the
last betas); joints+landmarks with gradients, B=160, about 18 ms.
"""
from __future__ import annotations

import threading


from engine.codec.bitstream import BODY_MODEL_IDS
from engine.errors import InputError
from engine.synthesis.device import resolve_device
from engine.synthesis.body.base import JOINT_NAMES, LANDMARK_NAMES, BodyModel, BodyOutput  # noqa: F401 (the package's API)
from engine.synthesis.body.anny import ANNY_PHENOTYPES, AnnyBody, default_anny_cache_dir  # noqa: F401
from engine.synthesis.body.smplx import SMPLXBody  # noqa: F401

_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def load_body_model(name: str = "anny", path: str | None = None, device: str | None = None) -> BodyModel:
    """The body model ``name`` ("anny" or "smplx"), cached per (name, path, device)."""
    name = (name or "anny").lower()
    dev = str(resolve_device(device))
    key = (name, str(path) if path else None, dev)
    with _CACHE_LOCK:
        model = _CACHE.get(key)
        if model is None:
            if name == "anny":
                model = AnnyBody(device=dev)
            elif name == "smplx":
                model = SMPLXBody(path, device=dev)
            else:
                raise InputError(f"unknown body model {name!r}: use anny or smplx")
            _CACHE[key] = model
    return model


def body_model_for_id(model_id: int, path: str | None = None, device: str | None = None) -> BodyModel:
    """The body model a bitstream names (engine.codec.bitstream.BODY_MODEL_IDS)."""
    for name, i in BODY_MODEL_IDS.items():
        if i == model_id and name in ("anny", "smplx"):
            return load_body_model(name, path, device)
    raise InputError(f"bitstream uses body model #{model_id}, which this build does not have")
