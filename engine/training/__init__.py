"""Training of the learned stage. Imports everything below it; only cli and benchmarks import it.

dataset.py  (key, target) pairs from real clips, the decoder's own FrameAnalysis cached on disk
losses.py   pixel, perceptual, texture and adversarial losses
train.py    the training loop (single process or torchrun / DistributedDataParallel)
"""
