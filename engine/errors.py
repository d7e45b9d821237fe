"""One error hierarchy: the CLI and the studio show ``str(err)`` as a one-line message."""


class IHVCError(Exception):
    """Any failure the user should see as one line (bad input, unsupported format...)."""


class BitstreamError(IHVCError):
    """Malformed, truncated or corrupt .ihvc data. Names the section and the byte offset."""

    def __init__(self, message: str, section: str = "file", offset: int | None = None):
        self.section = section
        self.offset = offset
        where = f"{section}" + (f" at byte {offset}" if offset is not None else "")
        super().__init__(f"corrupt bitstream ({where}): {message}")


class InputError(IHVCError):
    """A missing, unreadable or unsuitable input file (video, image, edit list)."""
