"""Mesh images: what the learned stage sees of a body mesh, per pixel (mask, normals, depth, part).

    mesh_image(raster, world, faces, fparts, body_z) -> B x 6 x H x W   (networks.MESH_CHANNELS)
    key_mesh_image(key_state, faces, fparts, H, W)   -> 1 x 6 x H x W
    face_parts(part_labels, faces)                   -> F per-face body-part ids

Computed by the decoder (engine.synthesis.decoder.FrameAnalysis.mesh) and used as they are by the
refiner and by training, so that the two cannot drift apart.
"""
from __future__ import annotations

import numpy as np
import torch

from engine.synthesis.camera import crop_to_frame, world_to_crop
from engine.synthesis.networks import N_PARTS
from engine.synthesis.raster import Raster, rasterize


def vertex_normals(world: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """B x V x 3 world vertices, F x 3 faces (outward, counter-clockwise) -> B x V x 3 unit normals."""
    v = world[:, faces]                                                   # B x F x 3 x 3
    fn = torch.cross(v[:, :, 1] - v[:, :, 0], v[:, :, 2] - v[:, :, 0], dim=-1)
    n = torch.zeros_like(world)
    n.index_add_(1, faces.reshape(-1), fn[:, :, None, :].expand(-1, -1, 3, -1).reshape(world.shape[0], -1, 3))
    return n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def face_parts(part_labels, faces: torch.Tensor) -> torch.Tensor:
    """Per-face part id (the label of the face's first vertex whose label two vertices share, else vertex 0)."""
    lab = torch.as_tensor(np.asarray(part_labels), dtype=torch.int64, device=faces.device)[faces]   # F x 3
    two = torch.where(lab[:, 1] == lab[:, 2], lab[:, 1], lab[:, 0])
    return two.clamp(0, N_PARTS - 1)


def mesh_image(raster: Raster, world: torch.Tensor, faces: torch.Tensor, fparts: torch.Tensor,
               body_z: torch.Tensor) -> torch.Tensor:
    """B x 6 x H x W mesh image (networks.MESH_CHANNELS): mask, normals, depth - body distance, part id.

    world: B x V x 3 world vertices (engine.synthesis.camera.to_world); body_z: B body distances (trans z).
    """
    mask = raster.mask
    nrm = raster.interpolate(vertex_normals(world, faces), faces)             # B x H x W x 3
    nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    depth = torch.where(mask, raster.depth - body_z.reshape(-1, 1, 1).to(raster.depth.dtype),
                        torch.zeros_like(raster.depth))
    part = torch.where(mask, fparts[raster.tri.clamp(min=0)], torch.full_like(raster.tri, -1))
    return torch.cat([mask[:, None].float(), nrm.permute(0, 3, 1, 2).float(), depth[:, None].float(),
                      part[:, None].float()], 1)


def key_mesh_image(st, faces: torch.Tensor, fparts: torch.Tensor, height: int, width: int,
                   cull_backfaces: bool = True) -> torch.Tensor:
    """1 x 6 x H x W mesh image of a key frame from the decoder's KeyState ``st`` (world vertices, camera)."""
    uv, d = world_to_crop(st.world, st.trans, st.focal)
    xy = crop_to_frame(uv, st.loc, width, height)
    r = rasterize(xy, d, faces, height, width, cull_backfaces=cull_backfaces)
    return mesh_image(r, st.world, faces, fparts, st.trans[:, 2])
