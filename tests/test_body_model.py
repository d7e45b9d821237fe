"""Body model interface: shapes, batching, gradients, conventions; Anny and a synthetic SMPL-X file."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.synthesis.body import JOINT_NAMES, BodyOutput, load_body_model
from engine.errors import InputError
from engine.codec.semantics import BODY_JOINTS

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def anny():
    return load_body_model("anny")


def J(name):
    return JOINT_NAMES.index(name)


def test_anny_rest_pose_conventions(anny):
    out = anny.forward(torch.zeros(1, 21, 3))
    assert isinstance(out, BodyOutput)
    assert out.vertices.shape == (1, anny.n_vertices, 3) and anny.n_vertices == 13718
    assert out.joints.shape == (1, 22, 3)
    assert anny.faces.shape == (27420, 3) and anny.faces.dtype == np.int64
    assert anny.faces.min() == 0 and anny.faces.max() == anny.n_vertices - 1
    j = out.joints[0]
    assert torch.allclose(j[0], torch.zeros(3), atol=1e-6)          # pelvis at origin
    assert j[J("head"), 1] > j[J("neck"), 1] > j[0, 1] > j[J("left_knee"), 1]   # y up
    assert j[J("left_shoulder"), 0] > 0.1 and j[J("right_shoulder"), 0] < -0.1  # person's left = +x
    assert j[J("left_foot"), 2] > j[J("left_ankle"), 2] + 0.05      # toes point to +z (facing camera)
    # A-pose: the wrists hang well below the shoulders, not a T-pose
    drop = j[J("left_shoulder"), 1] - j[J("left_wrist"), 1]
    assert 0.2 < drop < 0.45
    height = out.vertices[0, :, 1].max() - out.vertices[0, :, 1].min()
    assert 1.4 < height < 2.0
    assert anny.model_id == 1 and anny.n_betas == 6


def test_anny_pose_axes_follow_smplx_convention(anny):
    pose = torch.zeros(1, 21, 3)
    pose[0, BODY_JOINTS.index("left_shoulder"), 2] = 0.8        # about +z: raise the left arm
    pose[0, BODY_JOINTS.index("right_shoulder"), 2] = -0.8      # about -z: raise the right arm
    rest = anny.joints(torch.zeros(1, 21, 3))[0]
    j = anny.joints(pose)[0]
    assert j[J("left_wrist"), 1] > rest[J("left_wrist"), 1] + 0.15
    assert j[J("right_wrist"), 1] > rest[J("right_wrist"), 1] + 0.15
    # the shoulder joint itself does not move when its own bone rotates
    assert torch.allclose(j[J("left_shoulder")], rest[J("left_shoulder")], atol=1e-5)
    # head nod about +x tips the face down (towards -y and +z)
    pose = torch.zeros(1, 21, 3)
    pose[0, BODY_JOINTS.index("head"), 0] = 0.5
    nod = anny.forward(pose).vertices[0]
    base = anny.forward(torch.zeros(1, 21, 3)).vertices[0]
    top = base[:, 1].argmax()
    assert nod[top, 2] > base[top, 2] + 0.03


def test_anny_batching_betas_and_gradients(anny):
    g = torch.Generator().manual_seed(0)
    pose = torch.randn(4, 21, 3, generator=g) * 0.3
    betas = torch.rand(4, 6, generator=g) - 0.5
    batched = anny.forward(pose, betas)
    single = anny.forward(pose[2:3], betas[2:3])
    assert torch.allclose(batched.vertices[2], single.vertices[0], atol=1e-5)
    assert torch.allclose(batched.joints[2], single.joints[0], atol=1e-5)
    # joints() agrees with forward().joints; one betas row broadcasts
    assert torch.allclose(anny.joints(pose, betas[:1]), anny.forward(pose, betas[:1]).joints, atol=1e-6)
    # betas change the body (height phenotype is index 4)
    tall = anny.joints(torch.zeros(1, 21, 3), torch.tensor([[0, 0, 0, 0, 0.5, 0]]))
    short = anny.joints(torch.zeros(1, 21, 3), torch.tensor([[0, 0, 0, 0, -0.5, 0]]))
    assert tall[0, J("head"), 1] > short[0, J("head"), 1] + 0.1
    # differentiable in pose and betas
    p = pose.clone().requires_grad_()
    b = torch.zeros(1, 6, requires_grad=True)
    anny.joints(p, b)[..., 1].sum().backward()
    assert p.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        anny.forward(torch.zeros(2, 20, 3))


def test_anny_part_labels_and_cache(anny):
    parts = anny.part_labels()
    assert parts.shape == (anny.n_vertices,)
    assert parts.min() >= 0 and parts.max() <= 21
    assert len(np.unique(parts)) >= 18
    # head vertices are labelled head; they sit highest
    v = anny.forward(torch.zeros(1, 21, 3)).vertices[0].numpy()
    assert parts[v[:, 1].argmax()] == J("head")
    assert load_body_model("anny") is anny


def test_unknown_model_is_input_error():
    with pytest.raises(InputError):
        load_body_model("nope")
    with pytest.raises(InputError):
        load_body_model("smplx", path=None)
    with pytest.raises(InputError):
        load_body_model("smplx", path="/nonexistent/folder/x")


# ----------------------------------------------------------------------------- SMPL-X

# SMPL-X kinematic tree (55 joints): body 0..21, jaw 22, eyes 23-24, hands 25..54.
_SMPLX_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19,
                  15, 15, 15,
                  20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
                  21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53]


def _write_synthetic_smplx(path, n_vertices=220, seed=0):
    """A tiny model file in the SMPL-X .npz layout: 55 joints, each owning a few vertices
    scattered around a T-pose-like skeleton; random shape and pose blendshapes."""
    rng = np.random.default_rng(seed)
    parents = np.array(_SMPLX_PARENTS)
    J = np.zeros((55, 3))
    for j in range(1, 55):
        J[j] = J[parents[j]] + rng.normal(0, 0.08, 3) + np.array([0, 0.08, 0])
    owner = np.arange(n_vertices) % 55
    v = J[owner] + rng.normal(0, 0.02, (n_vertices, 3))
    Jreg = np.zeros((55, n_vertices))
    for j in range(55):
        idx = np.flatnonzero(owner == j)
        Jreg[j, idx] = 1.0 / len(idx)
    # make the regressed joints equal J for the template
    v += (J - Jreg @ v)[owner]
    weights = np.zeros((n_vertices, 55))
    weights[np.arange(n_vertices), owner] = 1.0
    faces = np.stack([np.arange(n_vertices - 2), np.arange(1, n_vertices - 1), np.arange(2, n_vertices)], 1)
    np.savez(
        path,
        v_template=v, f=faces.astype(np.uint32), J_regressor=Jreg, weights=weights,
        kintree_table=np.stack([np.where(parents < 0, 2**32 - 1, parents), np.arange(55)]).astype(np.int64),
        shapedirs=rng.normal(0, 0.01, (n_vertices, 3, 20)),
        posedirs=rng.normal(0, 0.001, (n_vertices, 3, 54 * 9)),
        hands_componentsl=np.eye(45), hands_componentsr=np.eye(45),
        hands_meanl=np.zeros(45), hands_meanr=np.zeros(45),
        lmk_faces_idx=np.arange(10, dtype=np.int64), lmk_bary_coords=np.full((10, 3), 1 / 3),
    )
    return J


def test_smplx_backend_with_synthetic_npz(tmp_path):
    J = _write_synthetic_smplx(tmp_path / "SMPLX_NEUTRAL.npz")
    m = load_body_model("smplx", path=str(tmp_path))
    assert m.name == "smplx" and m.model_id == 2 and m.n_betas == 10
    out = m.forward(torch.zeros(3, 21, 3))
    assert out.vertices.shape == (3, 220, 3) and out.joints.shape == (3, 22, 3)
    assert np.allclose(out.joints[0].numpy(), J[:22] - J[0], atol=1e-4)   # rest joints, pelvis at origin
    # rotating the left elbow moves the left wrist about the elbow, at fixed distance
    pose = torch.zeros(1, 21, 3)
    pose[0, 17] = torch.tensor([0.0, 0.0, 1.0])
    posed = m.forward(pose).joints[0]
    e, w = 18, 20
    assert not torch.allclose(posed[w], out.joints[0, w], atol=1e-3)
    assert torch.isclose((posed[w] - posed[e]).norm(), (out.joints[0, w] - out.joints[0, e]).norm(), atol=1e-4)
    # betas change the shape; batching is consistent; gradients flow
    b = torch.randn(2, 10)
    p = torch.randn(2, 21, 3) * 0.2
    both = m.forward(p, b)
    one = m.forward(p[1:], b[1:])
    assert torch.allclose(both.vertices[1], one.vertices[0], atol=1e-5)
    pg = p.clone().requires_grad_()
    m.forward(pg, b).vertices.sum().backward()
    assert pg.grad.abs().sum() > 0
    parts = m.part_labels()
    assert parts.shape == (220,) and parts.max() <= 21
    # the file itself (not only the folder) is accepted
    assert load_body_model("smplx", path=str(tmp_path / "SMPLX_NEUTRAL.npz")).n_vertices == 220


def test_smplx_bad_file_is_input_error(tmp_path):
    np.savez(tmp_path / "SMPLX_NEUTRAL.npz", v_template=np.zeros((3, 3)))
    with pytest.raises(InputError):
        load_body_model("smplx", path=str(tmp_path))


def test_landmarks_anny_and_smplx(anny, tmp_path):
    from engine.synthesis.body import LANDMARK_NAMES
    L = LANDMARK_NAMES.index
    pose = torch.zeros(2, 21, 3)
    pose[1, BODY_JOINTS.index("left_elbow"), 1] = 1.0
    lm = anny.landmarks(pose)
    assert lm.shape == (2, len(LANDMARK_NAMES), 3)
    p = lm[0]
    assert p[L("nose"), 2] > p[L("left_ear"), 2] + 0.05          # nose in front of the ears
    assert p[L("left_ear"), 0] > 0.03 > -0.03 > p[L("right_ear"), 0]
    assert p[L("nose"), 1] > p[L("left_shoulder"), 1] > p[L("left_hip"), 1] > p[L("left_knee"), 1]
    # surface shoulder point is near the skeleton's shoulder joint
    j = anny.joints(pose)
    assert (p[L("left_shoulder")] - j[0, J("left_shoulder")]).norm() < 0.08
    assert (p[L("left_wrist")] - j[0, J("left_wrist")]).norm() < 0.05
    jj, ll = anny.joints_and_landmarks(pose)
    assert torch.allclose(jj, j, atol=1e-6) and torch.allclose(ll, lm, atol=1e-6)
    assert not torch.allclose(lm[1, L("left_wrist")], lm[0, L("left_wrist")], atol=1e-3)
    _write_synthetic_smplx(tmp_path / "SMPLX_NEUTRAL.npz", seed=1)
    m = load_body_model("smplx", path=str(tmp_path))
    lm = m.landmarks(pose)
    assert lm.shape == (2, len(LANDMARK_NAMES), 3) and torch.isfinite(lm).all()
    assert torch.allclose(lm[:, L("left_elbow")], m.forward(pose).joints[:, J("left_elbow")], atol=1e-5)


def test_anny_landmarks_match_regression_on_skinned_mesh(anny):
    """The bone-moment fast path equals regressing the keypoints from the skinned vertices."""
    g = torch.Generator().manual_seed(3)
    pose = torch.randn(3, 21, 3, generator=g) * 0.4
    betas = torch.rand(1, 6, generator=g) - 0.5
    v = anny.forward(pose, betas).vertices
    W = anny._lm_w * anny._lm_omega.sum(-1)[None]       # K x Vsub vertex weights
    ref = torch.einsum("kv,bvc->bkc", W, v[:, anny._lm_vertices])
    lm = anny.landmarks(pose, betas)
    assert torch.allclose(lm[:, :W.shape[0]], ref, atol=1e-4)
    assert anny._sub.numel() < 104                       # the fit runs on a reduced skeleton


def test_call_is_forward(anny):
    pose = torch.zeros(1, 21, 3)
    assert torch.equal(anny(pose).vertices, anny.forward(pose).vertices)


def test_anny_shape_gradient_path_matches_full_model(anny):
    """While betas are optimised the fast path rebuilds only the bones and vertices it needs."""
    g = torch.Generator().manual_seed(5)
    pose = torch.randn(2, 21, 3, generator=g) * 0.3
    betas = (torch.rand(1, 6, generator=g) - 0.5)
    j0, l0 = anny.joints_and_landmarks(pose, betas)                 # constant betas: full rest model
    b = betas.clone().requires_grad_()
    j1, l1 = anny.joints_and_landmarks(pose, b)                      # light path
    assert torch.allclose(j0, j1, atol=1e-5) and torch.allclose(l0, l1, atol=1e-5)
    (j1.sum() + l1.sum()).backward()
    assert b.grad.abs().sum() > 0
