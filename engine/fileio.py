"""Atomic output: write to a temporary name beside the target, rename when complete.

Temporaries are named ``.STEM.ihvc-tmp-PID-XXXXXXXX.EXT`` beside the target. They are removed
on any exception, on Ctrl-C (SIGINT) and, once :func:`stop_on_signals` is installed (main.py
does it for every command), on SIGTERM and SIGHUP. SIGKILL cannot be caught: the next
:func:`atomic_path` in the same folder removes the temporaries whose process is gone
(same machine; a temporary of a live process, or of another user, is never touched).
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"         # small files the program ships (weights, sample bitstream)


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched, so a
    failed encode or export never leaves a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{_TMP_TAG}-{os.getpid()}-", suffix=suffix or path.suffix,
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        check_stopped()
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 minus the umask)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_umask() -> int:
    mask = os.umask(0)      # the only portable way to read the umask is to set it and put it back;
    os.umask(mask)          # done once at import, before worker threads could create files meanwhile
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


_TMP_TAG = "ihvc-tmp"
_TMP_NAME = re.compile(r"^\..*\." + _TMP_TAG + r"-(\d+)-[A-Za-z0-9_]{8}(\.[^.]*)?$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True          # another user's process (or an absurd number): leave its files alone
    return True


def remove_stale_temporaries(folder) -> list[Path]:
    """Remove the temporaries of atomic_path in ``folder`` whose process no longer runs (a run
    killed with SIGKILL, which cannot be caught). Returns what was removed."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = _TMP_NAME.match(name)
        if m is None or int(m.group(1)) == os.getpid() or _alive(int(m.group(1))):
            continue
        p = Path(folder) / name
        with contextlib.suppress(OSError):
            if p.is_file() and not p.is_symlink():
                p.unlink()
                removed.append(p)
    return removed


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C's KeyboardInterrupt so that every ``finally`` and
    atomic_path's clean-up run; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# The signal a stop was asked by. A handler's exception raised while C code has called back into Python
# (a library's log callback, a destructor) is printed and dropped there, and the command would go on and
# write its output: test_decode_stopped_by_sigterm_leaves_nothing once saw a decode finish with status 0
# after its SIGTERM. So the request is kept too, and atomic_path and main.py check it (``check_stopped``).
_STOP: list[int] = []


def _raise_stopped(signum, frame):
    _STOP.append(signum)
    raise Stopped(signum)


def check_stopped() -> None:
    """Raise :class:`Stopped` if a stop was asked for, even if its first raise was lost."""
    if _STOP:
        raise Stopped(_STOP[0])


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP raise :class:`Stopped` in the main thread (as SIGINT raises
    KeyboardInterrupt), so a stopped command leaves no temporary behind."""
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, _raise_stopped)


def refuse_same_file(output, *inputs) -> None:
    """InputError when ``output`` is one of ``inputs`` (the same path, a hard link, a symbolic link
    either way): writing it would destroy the input. Call before any work."""
    from engine.errors import InputError
    out = Path(output)
    for inp in inputs:
        if inp is None:
            continue
        try:
            same = os.path.samefile(out, inp)        # same device and inode: follows links
        except OSError:
            same = False                             # one of them does not exist: they cannot be one file
        if same:
            raise InputError(f"output {out} is the input {inp} (the same file): writing it would destroy "
                             f"the input; choose another output name")


def refuse_unwritable(output) -> None:
    """InputError when ``output`` cannot be written: a file stands where one of its folders would be, or
    the folder it would go in (or the nearest one that exists, since the folders are made) is not writable.
    Call before any work: an encode that fails only when it writes has wasted minutes."""
    from engine.errors import InputError
    out = Path(output).absolute()
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"cannot write {output}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {output}: no permission to write in {folder}")


def refuse_unwritable_folder(folder, option: str, first: str) -> None:
    """InputError when the folder given as ``option`` is a file, or could not take the file named ``first``
    (``refuse_unwritable``). Call before any work."""
    from engine.errors import InputError
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{option} must be a folder, got the file {folder}")
    refuse_unwritable(folder / first)
