"""IHVC engine: everything that is not Qt, in rooms by concept (DESIGN.md "Layout").

Imports run downwards only, in this order (tests/test_layering.py checks the graph):

    errors, fileio,     the foundation: one-line user errors, atomic output, where the assets are,
    workers             work over the cores in forked processes
    codec/              semantics, entropy coder, container, bitstream model, key pictures, colour, video I/O, rate
    synthesis/          body models, camera, rasterizer, motion, decoder, learned refiner, networks, mesh renderer
    analysis/           landmarks, body fit, camera motion, the encoder
    studio/             the Qt-free editor model: document, edit lists, plausibility, verify, the sample
    evaluation/         metrics, anchors, rate-distortion (BD-rate, Pareto), scoring
    training/           datasets, losses, the training loop (nothing imports it but cli and benchmarks)
    benchmarks/         ``python main.py bench`` measurements
    cli/                argument parsing and printing only

No module here imports Qt, ``app`` or ``editor_widgets``.
"""
