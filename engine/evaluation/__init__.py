"""Evaluation: metrics, anchors and rate-distortion. Imports studio and everything below.

metrics.py   PSNR, SSIM, MS-SSIM, VMAF (libvmaf in the imageio-ffmpeg binary)
anchors.py   VVC, x265 and SVT-AV1 low-delay anchors
rd.py        Points, BD-rate, Pareto fronts, lowest-rate checks, RD plots
scoring.py   encode / decode / measure one clip against the anchors (``main.py eval``)
"""
