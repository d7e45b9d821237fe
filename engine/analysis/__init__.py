"""Analysis (the encoder side): video -> landmarks -> body fit -> semantics -> Bitstream.
Imports synthesis (body models, camera; the decoder for the closed loop), codec and the foundation.

landmarks.py      MediaPipe Holistic landmarks per frame
fit.py            the body-model fit of the landmarks, batched over frames
camera_motion.py  background pan / zoom per frame (the camera group)
encoder.py        encode_video() -> EncodeResult
"""
