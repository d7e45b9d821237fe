"""Learned motion refinement and generator (DESIGN.md "Decoder", steps 2-3).

networks.py  SPADE motion network, occlusion-aware generator, multi-scale patch discriminator
dataset.py   (key, target) pairs from real clips, analysis cached on disk, augmentation
losses.py    paper losses with pretrained-free substitutes when ImageNet weights are absent
train.py     the training loop (single process or torchrun / DistributedDataParallel)
checkpoint.py  safetensors + JSON checkpoints, validated on load

The decoder-side entry is engine/learned.py. No Qt here.
"""
