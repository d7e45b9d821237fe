"""IHVC engine: everything that is not Qt (codec, body model, analysis, motion, metrics)."""
