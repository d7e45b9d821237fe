"""Synthesis: semantics -> body meshes -> motion -> frames (the decoder). Imports codec and the foundation.

body/          body models behind one interface: base, Anny (default), SMPL-X
camera.py      the crop camera: projection of body vertices into the frame
device.py      resolve_device(): one rule for CPU / CUDA everywhere
raster.py      the PyTorch rasterizer (triangle ids, barycentrics, depth)
motion.py      mesh-derived backward flow, visibility, hole filling, the analytic frame
decoder.py     Decoder: bitstream -> frames; FrameAnalysis, the typed hand-off to the refiner and training
mesh_image.py  per-pixel mesh images (mask, normals, depth, part) for the learned stage
networks.py    the learned stage's networks; checkpoint.py their safetensors + JSON files
refiner.py     the learned refiner as the decoder uses it
render.py      offscreen mesh rendering (pyrender/EGL) for overlays, the sample and the studio's 3D view
"""
