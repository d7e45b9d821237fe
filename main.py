"""IHVC Studio entry point.

    python main.py                 open the studio on assets/sample.ihvc
    python main.py FILE            open the studio on FILE (.ihvc; a video is offered for encoding)
    python main.py COMMAND ...     command-line tools (python main.py -h lists them)

Each command lives in its own module with ``add_arguments(parser)`` and
``run(args) -> int``; errors the user should see (engine.errors.IHVCError and
missing files) become one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS = {
    "studio": ("app.cli_studio", "open the studio (the default; main.py FILE opens FILE in it)"),
    "encode": ("engine.cli.encode", "encode a video of one person into an .ihvc bitstream"),
    "decode": ("engine.cli.decode", "decode an .ihvc bitstream into a video"),
    "inspect": ("engine.cli.inspect", "print what an .ihvc bitstream holds"),
    "overlay": ("engine.cli.overlay", "draw the fitted body mesh over a video"),
    "eval": ("engine.cli.evaluate", "rate-distortion evaluation against VVC, x265 and SVT-AV1"),
    "train": ("engine.cli.train", "train the learned motion refinement and generator"),
    "edit": ("engine.cli.edit", "apply a JSON edit list to a bitstream without the GUI"),
    "bench": ("engine.cli.bench", "benchmarks (results go to docs/BENCHMARKS.md)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; only the chosen command's module is imported (fast start, small deps)."""
    parser = argparse.ArgumentParser(prog="main.py", description="IHVC Studio: interactive human video coding")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


STUDIO_SUFFIXES = (".ihvc", ".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")


def opens_in_studio(arg: str) -> bool:
    """Is a first argument that names no command a file for the studio (an existing path, or a
    bitstream / video name)? Anything else stays an unknown command for argparse to refuse."""
    from pathlib import Path
    return Path(arg).suffix.lower() in STUDIO_SUFFIXES or Path(arg).is_file()


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["studio"]
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is not None and command not in COMMANDS and opens_in_studio(command):
        argv = ["studio", *argv]         # main.py FILE: the studio on FILE (a video: it offers to encode)
        command = "studio"
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    if not getattr(args, "_module", None):
        build_parser().print_help()
        return 2
    import warnings

    from engine.errors import IHVCError, printable
    from engine.fileio import Stopped, check_stopped, stop_on_signals
    # Every bad value is checked explicitly and reported in one line; a stray numpy RuntimeWarning
    # (overflow, invalid value) on the way would only split that one line into several.
    warnings.simplefilter("ignore", RuntimeWarning)
    if args._module != COMMANDS["studio"][0]:
        stop_on_signals()          # SIGTERM / SIGHUP clean up temporaries as Ctrl-C does (not in the Qt loop)
    try:
        rc = int(importlib.import_module(args._module).run(args) or 0)
        check_stopped()            # a stop whose exception something swallowed on the way
        return rc
    except IHVCError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        print(f"error: {printable(exc.strerror or exc)}: {printable(exc.filename)}", file=sys.stderr)
        return 2
    except Stopped as exc:
        print(f"stopped by {exc}; nothing written", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("interrupted; nothing written", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"error: {args.command}: out of memory", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug: one line and a log, never a raw traceback
        log = _log_traceback(args.command, argv)
        print(f"internal error in {args.command}: {printable(exc.__class__.__name__)}: {printable(exc)}"[:400]
              + (f" (traceback in {log})" if log else ""), file=sys.stderr)
        return 1


def _log_traceback(command: str, argv) -> str | None:
    """Write the current exception's traceback to a log file; its path, or None if none could be written."""
    import tempfile
    import time
    import traceback
    text = f"{time.strftime('%Y-%m-%d %H:%M:%S')} main.py {' '.join(argv)}\n{traceback.format_exc()}"
    try:
        fd, path = tempfile.mkstemp(prefix=f"ihvc-{command}-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
        return path
    except OSError:
        return None


if __name__ == "__main__":
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    sys.exit(main())
