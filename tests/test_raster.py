"""engine/synthesis/raster.py: coverage, barycentrics, depth order, batching, back-face culling."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from engine.synthesis.camera import project
from engine.synthesis.raster import rasterize


def _proj(mesh, rot=(0, 0, 0), trans=(0, 0, 5), loc=(0.5, 0.5, 1, 1), size=64, focal=2.0):
    V = torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32)[None]
    xy, d = project(V, torch.tensor([rot], dtype=torch.float32), torch.tensor([trans], dtype=torch.float32),
                    torch.tensor([loc], dtype=torch.float32), torch.tensor([focal, focal]), size, size)
    return V, xy, d, torch.tensor(np.asarray(mesh.faces), dtype=torch.int64)


def test_triangle_coverage_and_barycentrics():
    # A screen-space triangle at constant depth: covered pixels are exactly the centres inside it.
    xy = torch.tensor([[[4.2, 3.1], [40.7, 10.3], [12.5, 50.9]]])
    d = torch.full((1, 3), 2.0)
    faces = torch.tensor([[0, 1, 2]])
    r = rasterize(xy, d, faces, 64, 64)
    ys, xs = np.mgrid[0:64, 0:64] + 0.5
    p = np.stack([xs, ys], -1)
    a, b, c = xy[0].numpy()

    def edge(p0, p1, q):
        return (p1[0] - p0[0]) * (q[..., 1] - p0[1]) - (p1[1] - p0[1]) * (q[..., 0] - p0[0])
    inside = (edge(a, b, p) >= 0) & (edge(b, c, p) >= 0) & (edge(c, a, p) >= 0)
    inside |= (edge(a, b, p) <= 0) & (edge(b, c, p) <= 0) & (edge(c, a, p) <= 0)
    assert (r.mask[0].numpy() == inside).all()
    # Barycentric interpolation of the vertex positions gives back the pixel centres.
    pos = r.interpolate(xy[0], faces)[0]
    m = r.mask[0]
    assert torch.allclose(pos[m], torch.tensor(p, dtype=torch.float32)[m], atol=1e-3)
    assert torch.allclose(r.bary[0][m].sum(-1), torch.ones(int(m.sum())), atol=1e-5)
    assert torch.isinf(r.depth[0][~m]).all() and (r.tri[0][~m] == -1).all()
    assert torch.allclose(r.depth[0][m], torch.full((int(m.sum()),), 2.0))


def test_perspective_correct_surface_points():
    # A tilted quad: the 3D point rebuilt from the barycentrics projects onto the pixel centre.
    mesh = trimesh.Trimesh([[-0.6, -0.5, -0.4], [0.6, -0.5, 0.5], [0.6, 0.5, 0.5], [-0.6, 0.5, -0.4]],
                           [[0, 1, 2], [0, 2, 3]], process=False)
    V, xy, d, F = _proj(mesh)
    r = rasterize(xy, d, F, 64, 64)
    pts = r.interpolate(V[0], F)[0]                        # H x W x 3 body-frame points
    m = r.mask[0]
    assert m.sum() > 500
    p3 = pts[m][None]
    pxy, pd = project(p3, torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 5.0]]), torch.tensor([[0.5, 0.5, 1.0, 1.0]]),
                      torch.tensor([2.0, 2.0]), 64, 64)
    ys, xs = torch.nonzero(m, as_tuple=True)
    centres = torch.stack([xs + 0.5, ys + 0.5], -1).float()
    assert (pxy[0] - centres).abs().max() < 1e-3
    assert torch.allclose(pd[0], r.depth[0][m], atol=1e-4)


def test_nearer_surface_wins():
    # A small box in front of a big one: where they overlap the small one's triangles win.
    big = trimesh.creation.box(extents=[1.2, 1.2, 0.2])
    small = trimesh.creation.box(extents=[0.4, 0.4, 0.2])
    small.apply_translation([0.1, 0.0, 0.6])
    both = trimesh.util.concatenate([big, small])
    V, xy, d, F = _proj(both)
    r = rasterize(xy, d, F, 64, 64)
    n_big = len(big.faces)
    tri = r.tri[0]
    c = tri[32, 32 + 4]                                   # inside the small box's silhouette
    assert c >= n_big
    assert 0 <= tri[20, 20] < n_big and tri[5, 5] == -1
    # Depth buffer agrees with the geometry: front face of the small box at z = 0.7.
    assert r.depth[0, 32, 36] == pytest.approx(5.0 - 0.7, abs=1e-4)
    # Drawing order does not matter.
    both2 = trimesh.util.concatenate([small, big])
    V2, xy2, d2, F2 = _proj(both2)
    r2 = rasterize(xy2, d2, F2, 64, 64)
    assert torch.equal(r2.mask, r.mask)
    assert torch.allclose(r2.depth[r2.mask], r.depth[r.mask])


def test_batch_equals_single_and_culling_on_closed_mesh():
    mesh = trimesh.creation.capsule(height=0.8, radius=0.3, count=[16, 16])
    mesh.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    V, xy0, d0, F = _proj(mesh, rot=(0.2, 0.4, 0.0))
    _, xy1, d1, _ = _proj(mesh, rot=(0.0, -0.3, 0.1), loc=(0.45, 0.55, 0.9, 0.9))
    rb = rasterize(torch.cat([xy0, xy1]), torch.cat([d0, d1]), F, 48, 64)
    for i, (xy, d) in enumerate([(xy0, d0), (xy1, d1)]):
        rs = rasterize(xy, d, F, 48, 64)
        assert torch.equal(rb.tri[i], rs.tri[0])
        assert torch.allclose(rb.bary[i], rs.bary[0], atol=1e-6)
        rc = rasterize(xy, d, F, 48, 64, cull_backfaces=True)
        # Closed, outward-wound mesh: culling changes at most a handful of silhouette pixels.
        assert (rc.tri[0] != rs.tri[0]).float().mean() < 0.002
        assert rs.mask[0].sum() > 300


def test_empty_and_behind_camera():
    faces = torch.tensor([[0, 1, 2]])
    xy = torch.tensor([[[10.0, 10.0], [20.0, 10.0], [10.0, 20.0]]])
    r = rasterize(xy, torch.full((1, 3), -1.0), faces, 32, 32)   # behind the camera
    assert not r.mask.any()
    r = rasterize(xy + 100, torch.ones(1, 3), faces, 32, 32)     # off screen
    assert not r.mask.any()


def test_a_closed_surface_has_no_pinholes_where_triangles_meet():
    """A triangulated square whose inner vertices sit at random sub-pixel places: every pixel centre
    inside it belongs to some triangle. Tested as exactly, a centre on a shared edge could fail both
    triangles' rounded edge tests (a pinhole the decoder took for background the person left, a
    black speck, about one a frame on ted_c)."""
    rng = np.random.default_rng(3)
    n, side = 24, 240.0
    g = np.stack(np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="xy"), -1).reshape(-1, 2).astype(float)
    pts = 8.0 + g * side / n
    inner = (g > 0).all(1) & (g < n).all(1)
    pts[inner] += rng.uniform(-3, 3, (int(inner.sum()), 2))
    pts[inner] = np.round(pts[inner]) + 0.5 + rng.choice([0.0, 1e-4, -1e-4, 3e-7], (int(inner.sum()), 2))
    faces = []
    for i in range(n):
        for j in range(n):
            a, b, c, d = i * (n + 1) + j, i * (n + 1) + j + 1, (i + 1) * (n + 1) + j, (i + 1) * (n + 1) + j + 1
            faces += [[a, c, b], [b, c, d]]                  # counter-clockwise with y down: culling keeps them
    xy = torch.tensor(pts, dtype=torch.float32)[None]
    faces = torch.tensor(faces)
    d = torch.full((1, xy.shape[1]), 3.0)
    for cull in (False, True):
        r = rasterize(xy, d, faces, 256, 256, cull_backfaces=cull)
        assert not (r.tri[0, 9:247, 9:247] < 0).any()        # centres 9.5 .. 246.5: inside the square
