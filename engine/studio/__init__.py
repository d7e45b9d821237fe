"""The Qt-free model of the editor: what the studio edits and how edits become a bitstream again.
Imports analysis, synthesis, codec and the foundation; the Qt application (app/) sits on top of it.

document.py      the open document: original and edited semantics, changes, save
edits.py         edit lists (JSON) and their application, shared by the studio and ``main.py edit``
plausibility.py  anatomical ranges and warnings for edited poses
verify.py        save, read back and compare (verify-after-save)
sample.py        the bundled sample bitstream
"""
