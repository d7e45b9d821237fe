"""Help > Quick guide (F1) and Help > About: what a new user needs, generated from the live
actions (so the keys listed are the keys bound) and from editor_widgets.units (so the units
listed are the units shown)."""
from __future__ import annotations

import html
from importlib import metadata

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout

from editor_widgets import units as U

from . import __version__

GUIDE_ACTIONS = ("open", "open_video", "save", "save_as", "export_video", "undo", "redo", "copy_pose",
                 "paste_pose", "mirror", "revert_frame", "range_edit", "play", "prev_frame", "next_frame",
                 "toggle_ghost", "guide")

SEMANTIC_ROWS = (
    ("Head", "head.x / y / z", "nod, turn and tilt of the head", "degrees"),
    ("Shoulders", "left_shoulder.*, right_shoulder.*",
     "the upper arm: x swings it forwards or backwards, z raises or lowers it sideways "
     "(+ raises the left arm, − the right), y turns it", "degrees"),
    ("Elbows", "left_elbow.*, right_elbow.*", "the forearm relative to the upper arm", "degrees"),
    ("Wrists", "left_wrist.*, right_wrist.*", "the hand relative to the forearm", "degrees"),
    ("Body rotation", "rot.x / y / z", "the whole body: lean, turn about the vertical, roll", "degrees"),
    ("Body translation", "trans.x / y / z", "the body inside its box; z is its distance from the camera",
     "metres"),
    ("Box in frame", "loc.cx, loc.cy, loc.w, loc.h",
     "where the person's box sits in the picture (centre) and how large it is: moves or scales the person",
     "pixels of the frame"),
    ("Camera", "camera.pan_x, pan_y, zoom",
     "the background relative to the key frame (pan in pixels, zoom as a log factor: 0.1 is about 10 % closer)",
     "pixels / log factor"),
)


def _keys(action) -> str:
    seqs = [s.toString(QKeySequence.SequenceFormat.NativeText) for s in action.shortcuts()]
    return " or ".join(s for s in seqs if s) or "–"


def guide_html(actions: dict) -> str:
    fixed = {"undo": "Undo", "redo": "Redo"}          # the live texts name the command on the stack
    rows = "".join(
        f"<tr><td>{html.escape(fixed.get(n) or actions[n].text().replace('&', '').rstrip('…'))}</td>"
        f"<td><b>{html.escape(_keys(actions[n]))}</b></td></tr>"
        for n in GUIDE_ACTIONS if n in actions)
    sem = "".join(f"<tr><td><b>{a}</b></td><td><code>{html.escape(b)}</code></td><td>{html.escape(c)}</td>"
                  f"<td>{d}</td></tr>" for a, b, c, d in SEMANTIC_ROWS)
    return f"""
<h2>IHVC Studio: quick guide</h2>
<p>A bitstream holds one picture (the key frame) and, per frame, a few dozen numbers that describe the
person: joint rotations of the head and arms, the body's rotation and position, and the box the person
occupies in the frame. Editing a number changes the person; the studio regenerates the picture from the
key frame. Nothing else of the video is re-encoded.</p>
<h3>Editing</h3>
<ul>
<li>Drag a slider or type a value (Enter applies it). While you drag, the preview shows a small
<i>draft</i>; the full frame follows when you let go.</li>
<li>Shift-drag on the timeline selects a range of frames; a slider then offsets the whole range, and
<b>Edit &gt; Range edit</b> offsets or sets one value over a range with easing at both ends (every frame
of the range is changed, the ramps lie inside it).</li>
<li>The curve view shows the value last edited over the whole clip (dashed: original); drag a point to
edit that frame.</li>
<li>Edit keys act on the document wherever the keyboard focus is, also in a value box.</li>
<li>{html.escape(U.FRAME_BASE_NOTE.capitalize())}.</li>
</ul>
<h3>Keys</h3>
<table cellspacing="4">{rows}</table>
<h3>What each value means</h3>
<table cellspacing="4"><tr><th align="left">group</th><th align="left">names (edit lists)</th>
<th align="left">what it moves</th><th align="left">shown in</th></tr>{sem}</table>
<p>Every slider and value box has a tooltip with its unit. Edit lists (<code>main.py edit</code>) store
angles in radians (or degrees with <code>"unit": "deg"</code>) and the box as fractions of the frame.</p>
<h3>Compare</h3>
<p><b>Side by side</b> shows the decoded original and the edited frame; <b>Wipe</b> splits one view
(drag the divider); <b>Difference</b> is a heat map of what changed. On a frame without edits Wipe and
Difference have nothing to compare, so the studio shows side by side and says so. <b>Invented pixels</b>
tints magenta what the decoder had to guess in the edited frame, because no key picture saw it (the wall an
arm uncovers, the inside of a forearm no key showed), and says how much of the frame that is (the line under
the preview says it in every mode): a large edit asks for more of it, and there the preview is a guess,
not the person.</p>
<h3>Files</h3>
<p>Save writes the edited bitstream, reads it back and checks it before replacing anything.
File &gt; Export video writes an H.264 MP4 that common players open.
<code>python main.py FILE</code> opens a bitstream (or offers to encode a video) in the studio.</p>
"""


def about_html() -> str:
    from engine.codec import container
    try:
        anny = metadata.version("anny")
    except metadata.PackageNotFoundError:
        anny = "not installed"
    return f"""
<h2>IHVC Studio {html.escape(__version__)}</h2>
<p>Interactive human video coding: edit the person in a video through readable semantics, without
re-encoding pixels. Bitstream format version {container.VERSION}.</p>
<h3>Licences</h3>
<ul>
<li><b>Body model</b>: Anny {html.escape(anny)} (© NAVER Corporation): code under the Apache License 2.0,
MakeHuman assets under CC0 1.0, shipped inside its wheel. Optional SMPL-X needs the user's own licensed
model files.</li>
<li><b>Learned decoder weights</b> (<code>assets/generator.safetensors</code>): trained by this project on
TED-Talk clips (published by TED under CC BY-NC-ND 4.0, used for research evaluation) and TaiChi clips
from snap-research/articulated-animation. Research use; the analytic decoder needs no weights.</li>
<li><b>Sample</b> (<code>assets/sample.ihvc</code>): made from an ASL gesture clip of
intel-iot-devkit/sample-videos, CC BY 4.0, cropped and re-encoded; see <code>assets/README</code>.</li>
<li>Key pictures are coded and decoded with FFmpeg (imageio-ffmpeg, PyAV; LGPL/GPL builds with libvvenc,
libx265, SVT-AV1, dav1d); the interface is Qt for Python (PySide6, LGPL v3).</li>
</ul>
"""


class TextDialog(QDialog):
    def __init__(self, title: str, body: str, parent=None, size=(760, 640)):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.text = QTextBrowser(self)
        self.text.setOpenExternalLinks(True)
        self.text.setHtml(body)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, parent=self)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        lay = QVBoxLayout(self)
        lay.addWidget(self.text, 1)
        lay.addWidget(buttons)
        self.resize(*size)


def show_guide(win) -> TextDialog:
    dlg = getattr(win, "_guide", None)
    if dlg is None:
        dlg = win._guide = TextDialog("IHVC Studio: quick guide", guide_html(win.actions), win)
    dlg.show()
    dlg.raise_()
    return dlg


def show_about(win) -> TextDialog:
    dlg = TextDialog("About IHVC Studio", about_html(), win, size=(620, 460))
    win._about = dlg
    dlg.show()
    return dlg
