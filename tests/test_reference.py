"""Reference tests (in the manner of CompressAI's): a committed bitstream, committed hashes.

tests/data/reference_v1.ihvc (made by tests/data/make_reference.py: synthetic, licence-clean, format
version 1, two groups of pictures, camera group) must decode, analytic path on the CPU, to frames
whose SHA-256 is committed here, so a refactor that changes one pixel fails loudly; and coding its
semantics again must give the very same bytes. Changing a hash is a decision, made in its own commit
with the reason (and the benchmarks run again).
"""
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.codec import container

REFERENCE = Path(__file__).resolve().parent / "data" / "reference_v1.ihvc"
# 2026-12-06: the rasterizer counts a pixel centre on a shared edge as inside within its rounding error,
# and a pixel off the frame mesh but next to it (a pinhole, a notch of the outline) is no longer a
# disocclusion: 308 of the 110,592 pixels changed, four of them dark specks (up to 105 levels under
# the pixel as decoded now) made whole. Before: 0267a250... Then disocclusions too thin to hold a
# 3 x 3 square are no longer filled: 1,187 pixels in thin lines along the moving outline (up to 68
# levels). Before: 1c954fa3...
# Then a pixel of the band around the body whose sample lies farther from the key's person than the pixel
# from the frame's own (by more than the person margin) keeps the background's motion: 771 pixels beside
# the walking person (up to 81 levels), background no longer dragged along. Before: dd1fd55c...
# Then a pixel beside the body whose key sample shows a part of the key's person that went elsewhere in the
# frame (the forward-backward check, motion.key_forward) is a disocclusion: 85 pixels of the last three
# frames (up to 5 levels). Before: e12df972...
# Then a key frame whose row is not the key's own (an edit; here the synthetic semantics' camera motion at
# the key frames, about 1 % of the frame, which no encoder writes) is drawn from its row instead of shown
# as the key picture: frames 0 and 6 only (8,127 and 7,234 pixels, up to 185 levels on the generated
# picture's edges). Before: 9beadbbb...
# Then body surface that no key saw (the inside of what the own key did not see, its rim included) is filled
# from the body around it instead of drawn with what covered it in the key: 20 pixels of the last two
# frames (up to 10 levels). Before: 17d20a57...
FRAMES_SHA256 = "aa56a3e18333e43cf8711e14f18e6b3e962be555f5e23312d2e75e4a8c47837c"


@pytest.fixture(scope="module")
def reference():
    return REFERENCE.read_bytes()


def test_reference_decodes_to_committed_frames(reference):
    from engine.synthesis.decoder import Decoder
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        frames = Decoder(container.from_bytes(reference), device="cpu").decode_all()
    finally:
        torch.set_num_threads(prev)
    assert frames.shape == (12, 96, 96, 3)
    assert frames.std() > 10 and not np.array_equal(frames[1], frames[5])      # a real picture that moves
    assert hashlib.sha256(frames.tobytes()).hexdigest() == FRAMES_SHA256


def test_reference_recoded_from_its_semantics_is_byte_identical(reference):
    bs = container.from_bytes(reference)
    assert bs.version == 1 and container.to_bytes(bs, version=1) == reference
    # the semantics as values (what the studio edits) coded again, around the same key-picture bytes
    again = bs.with_semantics(bs.semantics().copy())
    assert all(a.key_picture.payload is b.key_picture.payload for a, b in zip(bs.gops, again.gops))
    assert container.to_bytes(again, version=1) == reference


@pytest.mark.parametrize("version", [3, 4])
def test_reference_written_as_a_newer_version_reads_back_the_same_and_smaller(reference, version):
    from engine.synthesis.decoder import Decoder
    bs = container.from_bytes(reference)
    data = container.to_bytes(bs, version=version)     # two groups; the writer's default is version 4
    back = container.from_bytes(data)
    assert data[4] == version and back.version == version and len(data) < len(reference)
    if version == 4:
        assert len(data) < len(container.to_bytes(bs, version=3))
    assert [g.key_picture.payload for g in back.gops] == [g.key_picture.payload for g in bs.gops]
    assert np.array_equal(back.semantics(), bs.semantics())
    for a, b in zip(back.gops, bs.gops):
        assert np.array_equal(a.key.betas, b.key.betas) and np.array_equal(a.key.focal, b.key.focal)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        frames = Decoder(back, device="cpu").decode_all()
    finally:
        torch.set_num_threads(prev)
    assert hashlib.sha256(frames.tobytes()).hexdigest() == FRAMES_SHA256
