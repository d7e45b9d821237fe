"""The body-model interface every backend implements (see engine/synthesis/body/__init__.py)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.codec.semantics import BODY_JOINTS, N_BODY_JOINTS

JOINT_NAMES = ("pelvis",) + BODY_JOINTS        # the 22 output joints

# Surface / detector-style keypoints every backend provides through ``landmarks()``
# (what 2D detectors such as MediaPipe or COCO annotate: nose tip, eyes, ears and
# the visible shoulder / elbow / ... points, plus three knuckles per hand).
LANDMARK_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_big_toe", "right_big_toe", "left_heel", "right_heel",
    "left_index_mcp", "left_middle_mcp", "left_pinky_mcp",
    "right_index_mcp", "right_middle_mcp", "right_pinky_mcp",
)


@dataclass
class BodyOutput:
    vertices: torch.Tensor      # B x V x 3, body frame
    joints: torch.Tensor        # B x 22 x 3, body frame (pelvis + BODY_JOINTS)


class BodyModel:
    """Common interface. Subclasses set name, model_id, n_betas, faces, device."""

    name: str
    model_id: int
    n_betas: int
    faces: np.ndarray
    device: torch.device
    dtype = torch.float32

    @property
    def n_vertices(self) -> int:
        raise NotImplementedError

    def forward(self, body_pose: torch.Tensor, betas: torch.Tensor | None = None) -> BodyOutput:
        raise NotImplementedError

    def __call__(self, body_pose, betas=None) -> BodyOutput:
        return self.forward(body_pose, betas)

    def joints(self, body_pose: torch.Tensor, betas: torch.Tensor | None = None) -> torch.Tensor:
        """Joints only (B x 22 x 3); cheaper than ``forward`` where the backend allows."""
        return self.forward(body_pose, betas).joints

    def landmarks(self, body_pose: torch.Tensor, betas: torch.Tensor | None = None) -> torch.Tensor:
        """Detector-style keypoints B x len(LANDMARK_NAMES) x 3 in the body frame."""
        raise NotImplementedError

    def part_labels(self) -> np.ndarray:
        """Body-part id per vertex, (V,) int in 0..21: index into JOINT_NAMES of the
        joint whose bone moves the vertex most."""
        raise NotImplementedError

    def joints_and_landmarks(self, body_pose, betas=None):
        """(joints B x 22 x 3, landmarks B x L x 3)."""
        return self.joints(body_pose, betas), self.landmarks(body_pose, betas)

    # helpers
    def _pose(self, body_pose) -> torch.Tensor:
        body_pose = torch.as_tensor(body_pose, dtype=self.dtype, device=self.device)
        if body_pose.dim() == 2 and body_pose.shape[-1] == 3 * N_BODY_JOINTS:
            body_pose = body_pose.reshape(-1, N_BODY_JOINTS, 3)
        if body_pose.dim() != 3 or body_pose.shape[1:] != (N_BODY_JOINTS, 3):
            raise ValueError(f"body_pose must be B x 21 x 3, got {tuple(body_pose.shape)}")
        return body_pose

    def _betas(self, betas, batch: int) -> torch.Tensor:
        if betas is None:
            return torch.zeros(1, self.n_betas, dtype=self.dtype, device=self.device)
        betas = torch.as_tensor(betas, dtype=self.dtype, device=self.device)
        if betas.dim() == 1:
            betas = betas[None]
        k = betas.shape[-1]
        if k < self.n_betas:
            betas = torch.cat([betas, betas.new_zeros(betas.shape[0], self.n_betas - k)], -1)
        elif k > self.n_betas:
            betas = betas[:, :self.n_betas]
        if betas.shape[0] not in (1, batch):
            raise ValueError(f"betas batch {betas.shape[0]} does not match pose batch {batch}")
        return betas
