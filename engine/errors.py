"""One error hierarchy: the CLI and the studio show ``str(err)`` as a one-line message."""


def printable(text) -> str:
    """``text`` with every non-printable character escaped (\\n, \\x1b, ...), so that bytes taken
    from a file (a section tag, a file name) can neither split the one-line message nor send
    control sequences to the terminal."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))


class IHVCError(Exception):
    """Any failure the user should see as one line (bad input, unsupported format...)."""

    def __str__(self) -> str:
        return printable(super().__str__())


class BitstreamError(IHVCError):
    """Malformed, truncated or corrupt .ihvc data. Names the section and the byte offset."""

    def __init__(self, message: str, section: str = "file", offset: int | None = None):
        self.section = section
        self.offset = offset
        where = f"{section}" + (f" at byte {offset}" if offset is not None else "")
        super().__init__(f"corrupt bitstream ({where}): {message}")


class InputError(IHVCError):
    """A missing, unreadable or unsuitable input file (video, image, edit list)."""
