"""The codec: what an .ihvc file holds and how its bits are spent. Imports only the foundation
(engine.errors, engine.fileio).

semantics.py   the 31 (+3 camera) per-frame semantics, key semantics, quantization grids
entropy.py     prediction and context-adaptive arithmetic coding of the quantized residuals
bitstream.py   the in-memory Bitstream (groups of pictures, key pictures), fixed numeric ids
container.py   the .ihvc file format: serialise, parse (every failure one BitstreamError)
keypicture.py  intra coding of key pictures (VVC through FFmpeg's libvvenc, HEVC and AV1 through PyAV)
colour.py      the one RGB <-> YUV 4:2:0 path of key pictures, anchors and input video
video.py       reading and writing video files (PyAV)
rate.py        the one rate accounting: encode's summary, ``inspect`` and the studio's panel
"""
