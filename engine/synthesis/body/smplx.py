"""SMPL-X, for users who have the licensed model files (``smplx`` package's skinning functions).

The model file is read here, never by the ``smplx`` package: its loader calls
``np.load(..., allow_pickle=True)``, so a crafted ``.npz`` in the model folder would run code
(pickled objects execute on load). This module reads only the numeric arrays it needs with
``allow_pickle=False``; a file whose needed arrays are pickled objects is refused.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from engine.codec.bitstream import BODY_MODEL_IDS
from engine.errors import InputError
from engine.synthesis.device import resolve_device
from engine.synthesis.body.base import LANDMARK_NAMES, BodyModel, BodyOutput

# The arrays the body needs (SMPL-X .npz layout); any other entry of the file is never read.
_ARRAYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f")


def _model_arrays(path, dtype) -> SimpleNamespace:
    """The skinning model of an SMPL-X .npz, read without unpickling and checked for shape."""
    def bad(why):
        return InputError(f"not a usable SMPL-X model file {path}: {why}")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise bad("not an .npz archive")
            missing = [k for k in _ARRAYS if k not in z.files]
            if missing:
                raise bad(f"missing {', '.join(missing)}")
            a = {k: z[k] for k in _ARRAYS}
    except ValueError as exc:          # pickled data (an object array, or a pickle file) is refused
        raise bad(f"holds pickled objects, which are not loaded ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise bad(f"{exc.__class__.__name__}: {exc}") from None
    if any(v.dtype.kind not in "biuf" for v in a.values()):
        raise bad("non-numeric arrays")
    v, sd, pd, jr, kt, w, faces = (a[k] for k in _ARRAYS)
    V = v.shape[0] if v.ndim == 2 and v.shape[1] == 3 else 0
    J = jr.shape[0] if jr.ndim == 2 else 0
    if not (V and J >= 22 and jr.shape[1] == V and sd.ndim == 3 and sd.shape[:2] == (V, 3) and sd.shape[2] >= 1
            and pd.ndim == 3 and pd.shape == (V, 3, (J - 1) * 9) and w.shape == (V, J) and kt.ndim == 2
            and kt.shape == (2, J) and faces.ndim == 2 and faces.shape[1] == 3):
        if V and J < 22:
            raise bad(f"{J} joints, need at least 22")
        raise bad("arrays of inconsistent shapes")
    parents = kt[0].astype(np.int64)
    parents[0] = -1
    if np.any(parents[1:] < 0) or np.any(parents[1:] >= np.arange(1, J)) or faces.min() < 0 or faces.max() >= V:
        raise bad("bad kinematic tree or face indices")
    if not all(np.all(np.isfinite(x)) for x in (v, sd, pd, jr, w)):
        raise bad("non-finite values")
    t = lambda x: torch.as_tensor(np.ascontiguousarray(x), dtype=dtype)  # noqa: E731
    return SimpleNamespace(v_template=t(v), shapedirs=t(sd[:, :, :10]), posedirs=t(pd.reshape(-1, pd.shape[-1]).T),
                           J_regressor=t(jr), parents=torch.as_tensor(parents), lbs_weights=t(w),
                           faces=faces.astype(np.int64))


class SMPLXBody(BodyModel):
    name = "smplx"
    model_id = BODY_MODEL_IDS["smplx"]
    n_betas = 10

    def __init__(self, path, device=None):
        if not path:
            raise InputError("the SMPL-X body model needs --body-model-path (folder with SMPLX_NEUTRAL.npz)")
        p = Path(path)
        if p.is_dir():
            cands = [p / "SMPLX_NEUTRAL.npz", p / "smplx" / "SMPLX_NEUTRAL.npz"]
            f = next((c for c in cands if c.exists()), None)
            if f is None:
                raise InputError(f"no SMPLX_NEUTRAL.npz in {p}")
        elif p.is_file():
            f = p
        else:
            raise InputError(f"no such SMPL-X model: {p}")
        from smplx.lbs import lbs
        self._lbs = lbs
        self.device = resolve_device(device)
        m = _model_arrays(f, self.dtype)
        self._m = SimpleNamespace(**{k: v.to(self.device) if torch.is_tensor(v) else v for k, v in vars(m).items()})
        self.n_betas = int(min(self.n_betas, m.shapedirs.shape[-1]))
        self.faces = np.asarray(m.faces, dtype=np.int64)
        self._n_joints = int(m.J_regressor.shape[0])
        w = m.lbs_weights.detach().cpu().numpy()
        top = w.argmax(1)
        self._parts = np.where(top < 22, top, 0).astype(np.int64)
        # hands/jaw/eyes children of body joints -> their body ancestor
        parents = m.parents.cpu().numpy()
        for j in range(22, self._n_joints):
            a = j
            while a >= 22:
                a = int(parents[a])
            self._parts[top == j] = a

    @property
    def n_vertices(self) -> int:
        return int(self._m.v_template.shape[0])

    def part_labels(self) -> np.ndarray:
        return self._parts.copy()

    # SMPL-X joint ids of the landmarks that are joints; hand knuckles are the
    # first phalanx joints (index1 25/40, middle1 28/43, pinky1 31/46).
    _LM_JOINTS = {"left_shoulder": 16, "right_shoulder": 17, "left_elbow": 18, "right_elbow": 19,
                  "left_wrist": 20, "right_wrist": 21, "left_hip": 1, "right_hip": 2,
                  "left_knee": 4, "right_knee": 5, "left_ankle": 7, "right_ankle": 8,
                  "left_big_toe": 10, "right_big_toe": 11, "left_heel": 7, "right_heel": 8,
                  "left_index_mcp": 25, "left_middle_mcp": 28, "left_pinky_mcp": 31,
                  "right_index_mcp": 40, "right_middle_mcp": 43, "right_pinky_mcp": 46}
    # Face points: SMPL-X vertex ids (smplx.vertex_ids) on a full model, otherwise
    # offsets from the head joint in its rest frame (m).
    _LM_VERTS = {"nose": 9120, "left_eye": 9929, "right_eye": 9448, "left_ear": 616, "right_ear": 6}
    _LM_HEAD_OFFS = {"nose": (0, 0.02, 0.11), "left_eye": (0.033, 0.05, 0.08),
                     "right_eye": (-0.033, 0.05, 0.08), "left_ear": (0.075, 0.02, -0.01),
                     "right_ear": (-0.075, 0.02, -0.01)}

    def landmarks(self, body_pose, betas=None) -> torch.Tensor:
        return self._landmarks(*self._run(body_pose, betas))

    def joints_and_landmarks(self, body_pose, betas=None):
        v, j, rot = self._run(body_pose, betas)
        return j[:, :22] - j[:, :1], self._landmarks(v, j, rot)

    def _landmarks(self, v, j, rot):
        out = []
        full = v.shape[1] == 10475
        for n in LANDMARK_NAMES:
            if n in self._LM_JOINTS and self._LM_JOINTS[n] < j.shape[1]:
                out.append(j[:, self._LM_JOINTS[n]])
            elif n in self._LM_VERTS and full:
                out.append(v[:, self._LM_VERTS[n]])
            else:
                off = torch.tensor(self._LM_HEAD_OFFS.get(n, (0, 0, 0)), dtype=v.dtype, device=v.device)
                out.append(j[:, 15] + (rot[:, 15] @ off[:, None])[..., 0])
        return torch.stack(out, 1) - j[:, :1]

    def _skin(self, body_pose, betas):
        """Linear blend skinning of the 21 body joints (root and the rest at zero).

        Returns (vertices, joints, full pose B x J x 3, betas B x K)."""
        body_pose = self._pose(body_pose)
        B = body_pose.shape[0]
        betas = self._betas(betas, B).expand(B, -1)
        m = self._m
        full = body_pose.new_zeros(B, self._n_joints, 3)
        full = torch.cat([full[:, :1], body_pose, full[:, 22:]], 1)
        v, j = self._lbs(betas, full.reshape(B, -1), m.v_template, m.shapedirs[..., :self.n_betas],
                         m.posedirs, m.J_regressor, m.parents, m.lbs_weights, pose2rot=True)
        return v, j, full, betas

    def _run(self, body_pose, betas):
        from smplx.lbs import batch_rigid_transform, batch_rodrigues, blend_shapes, vertices2joints
        v, j, full, betas = self._skin(body_pose, betas)
        B, m = full.shape[0], self._m
        # global joint rotations (for head-relative face points)
        rots = batch_rodrigues(full.reshape(-1, 3)).reshape(B, -1, 3, 3)
        v_shaped = m.v_template + blend_shapes(betas, m.shapedirs[..., :self.n_betas])
        J = vertices2joints(m.J_regressor, v_shaped)
        _, A = batch_rigid_transform(rots, J, m.parents, dtype=v.dtype)
        return v, j, A[..., :3, :3]

    def forward(self, body_pose, betas=None) -> BodyOutput:
        v, j, _, _ = self._skin(body_pose, betas)
        root = j[:, 0]
        return BodyOutput(vertices=v - root[:, None], joints=j[:, :22] - root[:, None])
