"""The fault policy's error types and messages (docs/conventions.md, "Faults").

Every problem a user can fix raises an :class:`EquiforceError` whose message names
the file, the frame (as numbered in the file) and the field. The command line
prints it and exits 2 (``equiforce.cli.main``, the one place that does).
A write that fails (disk full, file too large, permissions) becomes an
:class:`OutputError` naming the file; writers keep what was there before readable
(``equiforce.atomic``).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: exit status of every user-facing error
EXIT_USER_ERROR = 2

#: errno values of writes that fail for reasons the user can fix
WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EROFS, errno.EPERM}
)


class EquiforceError(ValueError):
    """A problem the user can fix; the message says where and what.

    Subclasses ``ValueError`` so that callers catching that keep working.
    """


class OutputError(EquiforceError):
    """An output could not be written; what was written before is intact."""


def output_error(err: OSError, what: str = "") -> OutputError:
    """An :class:`OutputError` from a failed write, naming the file and the cause."""
    name = err.filename or what or "output"
    hint = {
        errno.ENOSPC: "free disk space",
        errno.EDQUOT: "free quota",
        errno.EFBIG: "raise the file-size limit or write less often",
        errno.EACCES: "choose a writable folder",
        errno.EROFS: "choose a writable folder",
        errno.EPERM: "choose a writable folder",
    }.get(err.errno, "check the output folder")
    reason = err.strerror or str(err)
    return OutputError(
        f"{name}: cannot write ({reason}); files written before are intact: {hint} "
        "and resume"
    )


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Name ``path`` in an OS error raised inside the block (open files don't)."""
    try:
        yield
    except OSError as err:
        if err.filename is None:
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise


def is_write_error(err: BaseException) -> bool:
    """Whether ``err`` is an OS write failure the user can fix (disk full, ...)."""
    return isinstance(err, OSError) and err.errno in WRITE_ERRNOS


def describe(path: str | Path, frame: int | None, field: str, message: str) -> str:
    """``path: frame N: field: message``, the one format of user-facing errors."""
    where = f"{path}" + (f": frame {frame}" if frame is not None else "")
    return f"{where}: {field}: {message}"


class DataError(EquiforceError):
    """Invalid input data; the message names file, frame (as in the file), field.

    Raised by the readers (:mod:`equiforce.data.io`, which re-exports it).
    """

    def __init__(
        self, path: str | Path, frame: int | None, field: str, message: str
    ) -> None:
        super().__init__(describe(path, frame, field, message))
        self.path, self.frame, self.field = str(path), frame, field
