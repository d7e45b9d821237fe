"""Analysis (the encoder side): video -> landmarks -> body fit -> semantics -> Bitstream.
Imports synthesis (body models, camera; the decoder for the closed loop), codec and the foundation.

landmarks.py      MediaPipe Holistic landmarks per frame
fit.py            the body-model fit of the landmarks, batched over frames
camera_motion.py  background pan / zoom per frame (the camera group)
keys.py           key pictures chosen by content (rate-distortion with a draft decode)
closed_loop.py    per-frame semantics refined against the frames the decoder draws (--effort)
encoder.py        encode_video() -> EncodeResult
"""
