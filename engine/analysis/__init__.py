"""Encoder-side analysis: landmarks per frame (MediaPipe Holistic) and the body-model fit.

    landmarks.detect_landmarks(frames) -> Landmarks
    fit.fit_sequence(landmarks, body_model, key_index) -> FitResult (semantics per frame)
"""
