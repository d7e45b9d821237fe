"""Makes tests/data/reference_v1.ihvc, the committed reference bitstream of tests/test_reference.py.

    .venv/bin/python -m tests.data.make_reference

Synthetic and licence-clean (generated key pictures, smooth synthetic semantics), format version 1,
two groups of pictures, camera group on. Run it only to replace the reference on purpose; the test's
committed hashes must then be updated in the same commit, with the reason.
"""
from pathlib import Path

from engine.codec import container
from tests.factories import generated_picture, make_bitstream

OUT = Path(__file__).resolve().parent / "reference_v1.ihvc"

if __name__ == "__main__":
    bs = make_bitstream(n_frames=12, gop=6, camera=True, codec="hevc", qp=32, size=96, seed=7,
                        picture=generated_picture)
    print(OUT, container.write(bs, OUT), "bytes")
