"""A pose detection that jumps away from its neighbours is dropped (engine.analysis.landmarks.pose_jumps)."""
import numpy as np

import engine.analysis.landmarks as landmarks
from engine.analysis.landmarks import Landmarks, drop_jumps, pose_jumps

SIZE = 384
# Shoulders (11, 12) and hips (23, 24) of a person facing the camera, torso length 100 px.
TORSO = {11: (30.0, 0.0), 12: (-30.0, 0.0), 23: (20.0, 100.0), 24: (-20.0, 100.0)}


def _track(centres, upside_down=()) -> Landmarks:
    """Landmarks of a torso whose top centre follows ``centres`` (N x 2 px); the frames listed in
    ``upside_down`` have the hips above the shoulders (the pose model's mistake on a blurred frame)."""
    n = len(centres)
    pose2d = np.full((n, 33, 2), np.nan, np.float32)
    for i, c in enumerate(centres):
        for k, (dx, dy) in TORSO.items():
            pose2d[i, k] = (c[0] + dx, c[1] + (-dy if i in upside_down else dy))
    vis = np.where(np.isnan(pose2d[..., 0]), 0.0, 0.9).astype(np.float32)
    return Landmarks(SIZE, SIZE, pose2d, vis, np.zeros((n, 33, 3), np.float32),
                     np.full((n, 468, 2), np.nan, np.float32), np.full((n, 2, 21, 2), np.nan, np.float32),
                     np.ones(n, bool), None)


def _walk(n, step=2.0):
    return np.stack([150.0 + step * np.arange(n), np.full(n, 100.0)], 1)


def test_a_pose_far_from_its_agreeing_neighbours_is_dropped():
    c = _walk(20)
    c[0] = (330.0, -150.0)                       # the first frame of a fade-in: drawn above the picture
    c[12] = (40.0, 250.0)                        # and one frame in the middle
    lm = _track(c, upside_down=(0,))
    lm.detected[1] = False                       # the frame after it: nothing found
    lm.pose2d[1] = np.nan
    assert pose_jumps(lm) == [0, 12]
    out = drop_jumps(lm)
    assert not out.detected[0] and not out.detected[12] and out.detected[2:12].all()
    assert np.isnan(out.pose2d[[0, 12]]).all() and (out.pose_vis[[0, 12]] == 0).all()
    keep = [i for i in range(20) if i not in (0, 1, 12)]
    assert np.array_equal(out.pose2d[keep], lm.pose2d[keep], equal_nan=True)
    assert lm.detected[0] and lm.detected[12]    # the input is left as it was


def test_two_wrong_frames_in_a_row_are_both_dropped():
    c = _walk(16)
    c[7] = c[8] = (330.0, 320.0)
    assert pose_jumps(_track(c)) == [7, 8]


def test_a_cut_fast_motion_and_a_lone_detection_are_not_jumps():
    cut = _walk(20)
    cut[10:] += (150.0, 120.0)                   # another shot from frame 10 on: both sides agree
    assert pose_jumps(_track(cut)) == []
    assert pose_jumps(_track(_walk(20, step=30.0))) == []      # 0.3 torso lengths a frame, a dancer's leap
    lone = _track(_walk(8))
    lone.detected[1:] = False                    # a detection with nothing to compare it with
    assert pose_jumps(lone) == []
    assert drop_jumps(lone) is lone


class _FakeDetector:
    """Stands in for landmarks.HolisticDetector: a context manager whose ``process`` a test scripts."""
    made = 0

    def __init__(self, *args, **kwargs):
        type(self).made += 1
        self.i = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def test_detect_landmarks_drops_the_jumps(monkeypatch):
    """The encoder's landmarks come without them (the fit then carries the neighbours' state)."""
    c = _walk(10)
    c[0] = (330.0, -150.0)
    truth = _track(c, upside_down=(0,))

    class Scripted(_FakeDetector):
        def process(self, rgb):
            i, self.i = self.i, self.i + 1
            return {"detected": True, "pose2d": truth.pose2d[i], "pose_vis": truth.pose_vis[i]}

    monkeypatch.setattr(landmarks, "HolisticDetector", Scripted)
    lm = landmarks.detect_landmarks(np.zeros((10, SIZE, SIZE, 3), np.uint8), segmentation=False)
    assert lm.detected.tolist() == [False] + [True] * 9


def test_a_frame_with_nobody_found_is_tried_again_inside_a_border(monkeypatch):
    """MediaPipe misses a person who fills the frame from top to bottom (taichi_14: no detection in 180
    frames); inside a border it finds them. The landmarks come back in the frame's own pixels."""
    c = _walk(6)
    truth = _track(c)
    b = int(round(landmarks.RETRY_BORDER * SIZE))
    seen = []

    class NeedsRoom(_FakeDetector):
        """Finds the torso only in a frame larger than the clip's (as if bordered), frames 2 and 4 only."""

        def process(self, rgb):
            i = int(rgb[rgb.shape[0] // 2, rgb.shape[1] // 2, 0])       # the frame's index, painted in
            seen.append((i, rgb.shape[0]))
            if rgb.shape[0] == SIZE or i not in (2, 4):
                return {"detected": False}
            assert rgb[0, 0, 0] == 127                                      # a grey border
            return {"detected": True, "pose2d": truth.pose2d[i] + b, "pose_vis": truth.pose_vis[i],
                    "mask": np.pad(np.full((SIZE, SIZE), 200, np.uint8), b)}

    monkeypatch.setattr(landmarks, "HolisticDetector", NeedsRoom)
    frames = np.zeros((6, SIZE, SIZE, 3), np.uint8)
    for i in range(6):
        frames[i] = i
    lm = landmarks.detect_landmarks(frames, segmentation=True)
    assert NeedsRoom.made == 2 and [s for _, s in seen[6:]] == [SIZE + 2 * b] * 6
    assert lm.detected.tolist() == [False, False, True, False, True, False]
    assert np.allclose(lm.pose2d[[2, 4]], truth.pose2d[[2, 4]], equal_nan=True)
    assert lm.masks.shape == (6, SIZE, SIZE) and (lm.masks[2] == 200).all() and (lm.masks[0] == 0).all()
    streamed = landmarks.detect_landmarks(iter(frames), segmentation=True)    # frames that cannot be read twice
    assert streamed.detected.tolist() == lm.detected.tolist() and np.array_equal(streamed.pose2d, lm.pose2d,
                                                                                  equal_nan=True)


def _turned(yaws) -> Landmarks:
    """Landmarks whose metric torso is turned ``yaws`` degrees from the camera (0 facing it, 180 its back);
    the 2D points are numbered so that a permutation shows."""
    from engine.analysis.landmarks import _TORSO
    body = np.array([[0.2, 0.5, 0.0], [-0.2, 0.5, 0.0], [0.1, 0.0, 0.0], [-0.1, 0.0, 0.0]])
    lm = _track(_walk(len(yaws)))
    lm.pose2d[:] = np.arange(66, dtype=np.float32).reshape(33, 2)
    lm.pose_vis[:] = np.linspace(0.1, 0.9, 33, dtype=np.float32)
    for i, y in enumerate(np.radians(yaws)):
        R = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
        lm.pose3d[i, list(_TORSO)] = body @ R.T
    lm.hands[:, 0] = 1.0
    lm.hands[:, 1] = 2.0
    return lm


def test_a_back_read_as_a_front_for_a_few_frames_is_read_as_the_rest():
    """Seen from behind, MediaPipe may swap left and right (taichi_11's back read as a front every few
    frames); nobody turns 120 degrees between two frames, so the fewer frames are read as the rest."""
    from engine.analysis.landmarks import _MIRROR, facing_flips, one_facing, torso_yaw
    truth = _turned([170, 175, 180, 185, 190, 188, 186, 184, 182, 180, 178, 176])
    seen = one_facing(truth)
    assert seen is truth                                           # one reading throughout: as it was
    wrong = _turned([170, 175, 180, 185, 190, 188, 186, 184, 182, 180, 178, 176])
    for i in (4, 5, 6, 7):                                         # the other reading: left <-> right
        wrong.pose2d[i] = truth.pose2d[i][_MIRROR]
        wrong.pose_vis[i] = truth.pose_vis[i][_MIRROR]
        wrong.pose3d[i] = truth.pose3d[i][_MIRROR] * [1, 1, -1]
        wrong.hands[i] = truth.hands[i][::-1]
    assert np.abs(torso_yaw(wrong)[4:8]).max() < 20                # read as facing the camera
    assert np.flatnonzero(facing_flips(wrong)).tolist() == [4, 5, 6, 7]
    fixed = one_facing(wrong)
    for a in ("pose2d", "pose_vis", "pose3d", "hands"):
        assert np.allclose(getattr(fixed, a), getattr(truth, a), equal_nan=True), a


def test_detect_landmarks_reads_every_frame_one_way_round(monkeypatch):
    """The encoder's landmarks come with the back read as a back throughout."""
    from engine.analysis.landmarks import _MIRROR, torso_yaw
    truth = _turned([170, 175, 180, 185, 190, 188, 186, 184, 182, 180])
    swapped = (3, 4, 5)

    class ReadsAFront(_FakeDetector):
        def process(self, rgb):
            i, self.i = self.i, self.i + 1
            m = _MIRROR if i in swapped else np.arange(33)
            return {"detected": True, "pose2d": truth.pose2d[i][m], "pose_vis": truth.pose_vis[i][m],
                    "pose3d": truth.pose3d[i][m] * ([1, 1, -1] if i in swapped else [1, 1, 1])}

    monkeypatch.setattr(landmarks, "HolisticDetector", ReadsAFront)
    lm = landmarks.detect_landmarks(np.zeros((10, SIZE, SIZE, 3), np.uint8), segmentation=False)
    assert (np.abs(torso_yaw(lm)) > 165).all()
    assert np.allclose(lm.pose2d, truth.pose2d)


def test_a_real_turn_is_not_a_swap():
    """A person turning from the camera to their back, 30 degrees a frame (ubc_1's model turns 20)."""
    from engine.analysis.landmarks import facing_flips
    assert not facing_flips(_turned(list(range(0, 181, 30)) + [180] * 5)).any()
