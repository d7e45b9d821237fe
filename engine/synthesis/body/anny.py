"""Anny (open, the default): SMPL-X joints mapped onto MakeHuman bones (see the package docstring)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from engine.codec.bitstream import BODY_MODEL_IDS
from engine.errors import InputError
from engine.synthesis.device import resolve_device
from engine.synthesis.body.base import LANDMARK_NAMES, BodyModel, BodyOutput
from engine.synthesis.camera import axis_angle_to_matrix
from engine.codec.semantics import BODY_JOINTS

# Anny is z up, facing -y; the body frame is y up, facing +z: p_body = C p_anny.
_C_ANNY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

_ANNY_MAP = {
    "left_hip": ("upperleg01.L",), "right_hip": ("upperleg01.R",),
    "spine1": ("spine04",),
    "left_knee": ("lowerleg01.L",), "right_knee": ("lowerleg01.R",),
    "spine2": ("spine02",),
    "left_ankle": ("foot.L",), "right_ankle": ("foot.R",),
    "spine3": ("spine01",),
    "left_foot": tuple(f"toe{i}-1.L" for i in range(1, 6)),
    "right_foot": tuple(f"toe{i}-1.R" for i in range(1, 6)),
    "neck": ("neck01",),
    "left_collar": ("clavicle.L",), "right_collar": ("clavicle.R",),
    "head": ("head",),
    "left_shoulder": ("upperarm01.L",), "right_shoulder": ("upperarm01.R",),
    "left_elbow": ("lowerarm01.L",), "right_elbow": ("lowerarm01.R",),
    "left_wrist": ("wrist.L",), "right_wrist": ("wrist.R",),
}
ANNY_PHENOTYPES = ("gender", "age", "muscle", "weight", "height", "proportions")


def default_anny_cache_dir() -> Path:
    env = os.environ.get("ANNY_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ihvc" / "anny"


class AnnyBody(BodyModel):
    name = "anny"
    model_id = BODY_MODEL_IDS["anny"]
    n_betas = len(ANNY_PHENOTYPES)

    def __init__(self, device=None, cache_dir=None):
        cache_dir = Path(cache_dir) if cache_dir else default_anny_cache_dir()
        os.environ.setdefault("ANNY_CACHE_DIR", str(cache_dir))
        try:
            import anny
            import anny.paths
            from anny.utils import kinematics
        except ImportError as exc:  # pragma: no cover - dependency is pinned
            raise InputError(f"the Anny body model needs the 'anny' package ({exc})") from None
        anny.paths.set_anny_cache_path(cache_dir)
        self._fk = kinematics.forward_kinematic
        self.device = resolve_device(device)
        m = anny.Anny(skinning_method="lbs")
        m = m.to(dtype=self.dtype, device=self.device)
        m.eval()
        self._m = m
        labels = list(m.bone_labels)
        if list(m.phenotype_labels) != list(ANNY_PHENOTYPES):
            raise InputError(f"unexpected Anny phenotypes {m.phenotype_labels}")
        self.faces = np.asarray(m.faces.detach().cpu().numpy(), dtype=np.int64)
        self._n_bones = len(labels)
        self._C = _C_ANNY.to(self.device, self.dtype)
        self._chain = (m.kinematic_chain_levels, m.kinematic_chain_indices)
        # bone index -> SMPL joint (0..20) for posed bones
        bones, joints = [], []
        for j, name in enumerate(BODY_JOINTS):
            for b in _ANNY_MAP[name]:
                bones.append(labels.index(b))
                joints.append(j)
        self._posed_bones = torch.tensor(bones, device=self.device)
        self._posed_joints = torch.tensor(joints, device=self.device)
        # joint (0..21) positions: heads of bones, feet = mean of toes
        jw = torch.zeros(22, self._n_bones, dtype=self.dtype)
        jw[0, labels.index("root")] = 1.0
        for j, name in enumerate(BODY_JOINTS):
            bs = [labels.index(b) for b in _ANNY_MAP[name]]
            jw[j + 1, bs] = 1.0 / len(bs)
        self._joint_weights = jw.to(self.device)
        self._vb_idx = m.vertex_bone_indices.long()
        self._vb_w = m.vertex_bone_weights.to(self.dtype)
        self._rest_cache: tuple[bytes, dict] | None = None
        self._ref = m.reference_bone_orientations
        # part labels: the bone with the largest weight, walked up to a mapped bone
        parents = list(m.bone_parents)
        bone_part = np.zeros(self._n_bones, dtype=np.int64)
        mapped = {labels.index(b): j + 1 for j, n in enumerate(BODY_JOINTS) for b in _ANNY_MAP[n]}
        for b in range(self._n_bones):
            c = b
            while c >= 0 and c not in mapped:
                c = parents[c] if c > 0 else -1
            bone_part[b] = mapped.get(c, 0)
        top = self._vb_idx.gather(1, self._vb_w.argmax(1, keepdim=True))[:, 0].cpu().numpy()
        self._parts = bone_part[top]
        self._init_landmarks(labels)

    def _init_landmarks(self, labels, top_k: int = 64):
        """Surface keypoints from Anny's COCO regressor (sparsified to the top_k vertices
        per keypoint, > 99.5 % of the weight), hand knuckles from the finger bone heads.

        A regressed point is linear in the skinned vertices, so it is computed exactly
        from per-bone moments: p_k = sum_j A_j P_kj + t_j M_kj with
        P_kj = sum_v w_kv omega_vj v_v (rest) and M_kj = sum_v w_kv omega_vj, and the
        forward kinematics only runs over the bones these points and the 22 joints
        depend on (the fitting fast path)."""
        from anny.keypoints import _load_keypoint_data
        from anny.paths import get_anny_root_dir
        from anny.utils import kinematics
        coco = [n for n in LANDMARK_NAMES if not n.endswith("_mcp")]
        w, _ = _load_keypoint_data(self._m, get_anny_root_dir() / "data" / "keypoints" / "coco.pth", coco)
        vals, idx = w.topk(top_k, dim=1)
        vals = vals / vals.sum(1, keepdim=True)
        uniq, inv = torch.unique(idx.reshape(-1), return_inverse=True)
        lmw = torch.zeros(len(coco), len(uniq), dtype=self.dtype, device=self.device)
        lmw.scatter_add_(1, inv.reshape(idx.shape), vals.to(self.dtype))
        omega = torch.zeros(len(uniq), self._n_bones, dtype=self.dtype, device=self.device)
        omega.scatter_add_(1, self._vb_idx[uniq], self._vb_w[uniq])
        M = lmw @ omega                                     # K x bones
        hand = {"index": "finger2-1", "middle": "finger3-1", "pinky": "finger5-1"}
        hand_bones = [labels.index(f"{hand[n.split('_')[1]]}.{'L' if n.startswith('left') else 'R'}")
                      for n in LANDMARK_NAMES if n.endswith("_mcp")]
        need = set(torch.nonzero(M.abs().sum(0) > 0)[:, 0].tolist()) | set(hand_bones)
        need |= set(torch.nonzero(self._joint_weights.abs().sum(0) > 0)[:, 0].tolist())
        parents = [int(p) for p in self._m.bone_parents]
        for b in list(need):
            while b > 0:
                b = parents[b]
                need.add(b)
        need.add(0)
        sub = sorted(need)
        pos = {b: i for i, b in enumerate(sub)}
        sub_parents = [-1] + [pos[parents[b]] for b in sub[1:]]
        levels, ind = kinematics.get_kinematic_chain(sub_parents)
        self._sub = torch.tensor(sub, device=self.device)
        self._sub_chain = (levels, ind.to(self.device))
        self._sub_ref = None if self._ref is None else self._ref[self._sub]
        self._sub_posed = torch.tensor([pos[int(b)] for b in self._posed_bones.tolist()], device=self.device)
        self._sub_joint_weights = self._joint_weights[:, self._sub]
        self._lm_vertices = uniq
        self._lm_w = lmw                                                  # K x Vsub
        self._lm_omega = omega[:, self._sub].contiguous()                 # Vsub x S
        self._lm_M = M[:, self._sub]
        self._lm_hand = torch.tensor([pos[b] for b in hand_bones], device=self.device)

    def _pose_sub(self, body_pose, betas):
        """Forward kinematics over the reduced bone set with batched 3x3 matmuls
        (Anny's "local-ref" parameterisation, identical to anny.utils.kinematics):
        returns rest, (T rotation B x S x 3 x 3, T translation B x S x 3), posed heads B x S x 3, B."""
        body_pose = self._pose(body_pose)
        B = body_pose.shape[0]
        betas = self._betas(betas, B)
        rest = self._rest_sub(betas)
        Rp = axis_angle_to_matrix(body_pose @ self._C)                 # B x 21 x 3 x 3
        Rr, h = rest["R_sub"], rest["h_sub"]                            # b x S x 3 x 3, b x S x 3
        U = self._sub_ref if self._sub_ref is not None else Rr[0]
        levels, (local, order, inverse, parent) = self._sub_chain
        A = U[1:] @ Rr[:, 1:].transpose(-1, -2)
        A = torch.cat([torch.eye(3, dtype=A.dtype, device=A.device).expand(A.shape[0], 1, 3, 3), A], 1)
        q_off = (A[:, parent] @ (h - h[:, parent])[..., None])[..., 0]    # b x S x 3
        Upt = U[parent].transpose(-1, -2)                                 # S x 3 x 3
        k_trans = (Upt @ q_off[..., None])[..., 0]                        # b x S x 3
        k_rot = (Upt @ U).expand(B, -1, -1, -1)                           # U_p^T U_c (identity deltas)
        posed = (Upt[self._sub_posed] @ Rp[:, self._posed_joints]) @ U[self._sub_posed]
        k_rot = k_rot.index_put((torch.arange(B, device=self.device)[:, None], self._sub_posed[None]), posed)
        k_rot = k_rot[:, order]
        k_trans = k_trans[:, order].expand(B, -1, -1)
        rots = [torch.eye(3, dtype=self.dtype, device=self.device).expand(B, 1, 3, 3)]
        trs = [torch.zeros(B, 1, 3, dtype=self.dtype, device=self.device)]
        for first, last in levels[1:]:
            rp = rots[-1][:, local[first:last]]
            tp = trs[-1][:, local[first:last]]
            rots.append(rp @ k_rot[:, first:last])
            trs.append(tp + (rp @ k_trans[:, first:last, :, None])[..., 0])
        Wr = torch.cat(rots, 1)[:, inverse]
        Wt = torch.cat(trs, 1)[:, inverse]
        Tr = Wr @ Rr.transpose(-1, -2)
        Tt = Wt - (Tr @ h[..., None])[..., 0]
        return rest, (Tr, Tt), Wt, B

    def joints_and_landmarks(self, body_pose, betas=None):
        """Both at once, fast path: (B x 22 x 3, B x L x 3) in the body frame."""
        rest, (A, t), heads, B = self._pose_sub(body_pose, betas)
        joints = torch.einsum("jk,bkc->bjc", self._sub_joint_weights, heads)
        # P_kj (rest moments): b x S x 3 x K, then sum_j A_j P_kj as one batched matmul
        P = rest["lm_moments"]
        surf = (A @ P).sum(1).transpose(-1, -2) + torch.einsum("bjr,kj->bkr", t, self._lm_M)
        pts = torch.cat([surf, heads[:, self._lm_hand]], 1)
        root = heads[:, 0]
        return self._to_body(joints, root), self._to_body(pts, root)

    def _lm_moments(self, rest_vertices, subset: bool = False):
        """P (b x S x 3 x K): per-bone rest moments of the regressed keypoints."""
        v = rest_vertices if subset else rest_vertices[:, self._lm_vertices]   # b x V x 3
        Y = self._lm_w[None, :, None, :] * v.transpose(1, 2)[:, None]      # b x K x 3 x V
        return (Y @ self._lm_omega).permute(0, 3, 2, 1)                    # b x S x 3 x K

    def landmarks(self, body_pose, betas=None) -> torch.Tensor:
        return self.joints_and_landmarks(body_pose, betas)[1]

    def joints(self, body_pose, betas=None) -> torch.Tensor:
        return self.joints_and_landmarks(body_pose, betas)[0]

    @property
    def n_vertices(self) -> int:
        return int(self._m.template_vertices.shape[0])

    def part_labels(self) -> np.ndarray:
        return self._parts.copy()

    def _rest(self, betas: torch.Tensor) -> dict:
        """Rest model for betas (1 or B rows); cached for the last constant betas."""
        key = None
        if not betas.requires_grad:
            key = betas.detach().cpu().numpy().tobytes()
            cached = self._rest_cache
            if cached is not None and cached[0] == key:
                return cached[1]
        m = self._m
        pheno = (betas + 0.5).clamp(0.0, 1.0)
        b = pheno.shape[0]
        empty = pheno.new_zeros(b, 0)
        coeffs = m._get_phenotype_blendshape_coefficients(pheno, empty, empty)
        rest = m.get_rest_model(coeffs)
        out = {"vertices": rest["rest_vertices"], "heads": rest["rest_bone_heads"],
               "poses": rest["rest_bone_poses"]}
        if key is not None:
            out = {k: v.detach() for k, v in out.items()}
            if hasattr(self, "_lm_w"):
                out["lm_moments"] = self._lm_moments(out["vertices"])
                poses = out["poses"][:, self._sub]
                out["R_sub"], out["h_sub"] = poses[..., :3, :3], poses[..., :3, 3]
            self._rest_cache = (key, out)
        return out

    def _rest_sub(self, betas: torch.Tensor) -> dict:
        """What the fitting fast path needs (rest orientations and heads of the reduced
        bones, keypoint moments). With constant betas: the cached full rest model; with
        betas being optimised: computed on the few vertices and bones involved (same
        formulas as Anny's "cached" bone orientation, ~10x less work than the full model)."""
        m = self._m
        if not betas.requires_grad or m.bone_orientation != "cached" or m.rest_orientation_refiner is not None:
            return self._rest(betas)
        import roma
        pheno = (betas + 0.5).clamp(0.0, 1.0)
        empty = pheno.new_zeros(pheno.shape[0], 0)
        c = m._get_phenotype_blendshape_coefficients(pheno, empty, empty)
        if not hasattr(self, "_light"):
            lv, sub = self._lm_vertices, self._sub
            nc = m.blendshapes.shape[0]
            self._light = (m.template_vertices[lv], m.blendshapes[:, lv].reshape(nc, -1),
                           m.template_bone_heads[sub], m.bone_heads_blendshapes[:, sub].reshape(nc, -1),
                           m.bone_template_orientation_matrices[sub],
                           m.bone_orientation_blendshapes[:, sub].reshape(nc, -1))
        tv, bv, th, bh, tm, bm = self._light
        b = c.shape[0]
        verts = tv[None] + (c @ bv).reshape(b, *tv.shape)
        heads = th[None] + (c @ bh).reshape(b, *th.shape)
        M = tm[None] + (c @ bm).reshape(b, *tm.shape)
        R = roma.special_procrustes(M)
        if m.root_identity_orientation:
            R = torch.cat([torch.eye(3, dtype=R.dtype, device=R.device).expand(R.shape[0], 1, 3, 3), R[:, 1:]], 1)
        return {"R_sub": R, "h_sub": heads, "lm_moments": self._lm_moments(verts, subset=True)}

    def _pose_bones(self, body_pose, betas):
        body_pose = self._pose(body_pose)
        B = body_pose.shape[0]
        betas = self._betas(betas, B)
        rest = self._rest(betas)
        aa = body_pose @ self._C            # body-frame axis -> Anny axis: C^T a (row form)
        R = axis_angle_to_matrix(aa)        # B x 21 x 3 x 3
        D = torch.eye(4, dtype=self.dtype, device=self.device).repeat(B, self._n_bones, 1, 1)
        D[:, self._posed_bones, :3, :3] = R[:, self._posed_joints]
        rest_poses = rest["poses"].expand(B, -1, -1, -1)
        T, W = self._fk(self._chain, rest_poses, D, "local-ref", self._ref)
        return rest, T, W, B

    def _to_body(self, p, root):
        return (p - root[:, None, :]) @ self._C.T

    def posed_vertices(self, body_pose, betas=None) -> torch.Tensor:
        """B x V x 3 body-frame vertices, for optimisation (engine.analysis.closed_loop): the same
        skinning as :meth:`forward` as one sparse (V x bones) matrix product, whose backward is
        about 10x cheaper than the gathered 9-bones-per-vertex blend (equal up to float rounding)."""
        rest, T, W, B = self._pose_bones(body_pose, betas)
        if getattr(self, "_skin", None) is None:
            V, K = self._vb_idx.shape
            rows = torch.arange(V, device=self.device).repeat_interleave(K)
            self._skin = torch.sparse_coo_tensor(torch.stack([rows, self._vb_idx.reshape(-1)]),
                                                 self._vb_w.reshape(-1), (V, self._n_bones),
                                                 check_invariants=False).coalesce()
        nb = T.shape[1]
        flat = T[:, :, :3, :].reshape(B, nb, 12).permute(1, 0, 2).reshape(nb, B * 12)
        A = torch.sparse.mm(self._skin, flat).reshape(-1, B, 3, 4).permute(1, 0, 2, 3)      # B x V x 3 x 4
        verts = rest["vertices"].expand(B, -1, -1)
        v = (A[..., :3] @ verts[..., None])[..., 0] + A[..., 3]
        return self._to_body(v, W[:, 0, :3, 3])

    def forward(self, body_pose, betas=None) -> BodyOutput:
        rest, T, W, B = self._pose_bones(body_pose, betas)
        heads = W[..., :3, 3]
        joints = torch.einsum("jk,bkc->bjc", self._joint_weights, heads)
        verts = rest["vertices"].expand(B, -1, -1)
        # sparse linear blend skinning: 9 bones per vertex. (One index_select of the flattened 3 x 4
        # blocks gathers the same values as T[:, vb_idx, :3, :] in 1.5 instead of 2.6 ms a frame.)
        nb = T.shape[1]
        A = T[:, :, :3, :].reshape(B, nb, 12).index_select(1, self._vb_idx.reshape(-1))
        A = A.reshape(B, *self._vb_idx.shape, 3, 4)          # B x V x 9 x 3 x 4
        A = (A * self._vb_w[None, :, :, None, None]).sum(2)  # B x V x 3 x 4
        v = (A[..., :3] @ verts[..., None])[..., 0] + A[..., 3]
        root = heads[:, 0]
        return BodyOutput(vertices=self._to_body(v, root), joints=self._to_body(joints, root))
