"""``python main.py edit IN.ihvc --edits edits.json -o OUT.ihvc``: apply an edit list without the GUI.

The edit list format is described in engine/studio/edits.py. The key pictures are
copied byte for byte; only the semantics are re-quantized and re-coded. Nothing
is written when the input, the edit list or any edit in it is bad.
"""
from __future__ import annotations

from pathlib import Path

from engine.studio import edits as E
from engine.studio.edits import apply_to_bitstream


def add_arguments(p):
    p.add_argument("input", help="input .ihvc bitstream")
    p.add_argument("--edits", required=True, help="JSON edit list (see engine/studio/edits.py)")
    p.add_argument("-o", "--output", required=True, help="output .ihvc bitstream")


def run(args) -> int:
    from engine.codec import container
    from engine.fileio import refuse_same_file, refuse_unwritable
    src, dst = Path(args.input), Path(args.output)
    refuse_same_file(dst, src, args.edits)
    refuse_unwritable(dst)
    bs = container.read(src)            # says "no such file" or "is a folder" itself
    edit_list = E.load(args.edits)
    E.check_all(edit_list, bs.names, bs.n_frames, Path(args.edits).name)
    out = apply_to_bitstream(bs, edit_list, Path(args.edits).name)
    container.write(out, dst)
    changed = int((out.semantics() != bs.semantics()).any(1).sum())
    print(f"{len(edit_list)} edits applied, {changed} of {bs.n_frames} frames changed -> {dst}")
    return 0
