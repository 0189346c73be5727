"""The one exception tree of erofsd.

Every error the library raises on purpose is an ``ErofsdError`` carrying an
``errno``. Data paths translate it at one boundary (FUSE reply, fanotify
``FAN_DENY``, cachefiles ``copen``), and the CLI prints it as one line.
Where a builtin exception means the same thing, the class subclasses it too,
so ``except FileNotFoundError`` keeps working for callers who know only the
builtins.

This module is the bottom layer: it imports nothing of erofsd, and every
package (the format package included) may import it.

    ErofsdError                              EIO
    ├── CorruptImage                         EUCLEAN  (the kernel's EFSCORRUPTED)
    │   └── ChecksumMismatch                 EBADMSG
    ├── Unsupported                          EOPNOTSUPP
    ├── NotFound (FileNotFoundError)         ENOENT
    ├── NotADirectory (NotADirectoryError)   ENOTDIR
    ├── IsADirectory (IsADirectoryError)     EISDIR
    ├── NotASymlink                          EINVAL
    ├── NoSuchXattr                          ENODATA
    ├── DeviceMissing                        ENXIO
    ├── InvalidArgument (ValueError)         EINVAL
    │   ├── InvalidName                      EINVAL
    │   ├── InvalidRequest                   EINVAL   (a control API body)
    │   └── BadReference                     EINVAL
    ├── AlreadyExists (FileExistsError)      EEXIST
    ├── Busy                                 EBUSY
    ├── BuildError                           EIO      (names the source path)
    │   ├── NameNotStorable                  ENAMETOOLONG
    │   └── SourceChanged                    EAGAIN
    ├── IntegrityError                       EIO      (a digest did not match)
    ├── SourceError                          EIO      (a blob source failed)
    │   ├── SourceTimeout                    ETIMEDOUT
    │   └── AuthError (PermissionError)      EACCES
    └── CacheError                           EIO
        └── NoSpace                          ENOSPC
"""

from __future__ import annotations

import errno as _errno


class ErofsdError(Exception):
    """Base of every deliberate erofsd error."""

    errno: int = _errno.EIO

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        if errno is not None:
            self.errno = errno

    def __str__(self) -> str:  # builtin bases (OSError) would print a tuple
        return self.args[0] if self.args else type(self).__name__


class CorruptImage(ErofsdError):
    """The bootstrap or a blob breaks the on-disk format."""

    errno = _errno.EUCLEAN


class ChecksumMismatch(CorruptImage):
    errno = _errno.EBADMSG


class Unsupported(ErofsdError):
    """A valid image uses something erofsd does not read (e.g. compression)."""

    errno = _errno.EOPNOTSUPP


class NotFound(ErofsdError, FileNotFoundError):
    errno = _errno.ENOENT


class NotADirectory(ErofsdError, NotADirectoryError):
    errno = _errno.ENOTDIR


class IsADirectory(ErofsdError, IsADirectoryError):
    errno = _errno.EISDIR


class NotASymlink(ErofsdError):
    errno = _errno.EINVAL


class NoSuchXattr(ErofsdError):
    errno = _errno.ENODATA


class DeviceMissing(ErofsdError):
    """File data lives on a blob device that was not attached."""

    errno = _errno.ENXIO


class InvalidArgument(ErofsdError, ValueError):
    errno = _errno.EINVAL


class InvalidName(InvalidArgument):
    """An fsid, domain_id, tag or file name that cannot be used."""


class InvalidRequest(InvalidArgument):
    """A control API request whose body does not say what it must (HTTP 400)."""


class BadReference(InvalidArgument):
    """An image reference (oci:..., docker://...) that does not parse or resolve."""


class AlreadyExists(ErofsdError, FileExistsError):
    errno = _errno.EEXIST


class Busy(ErofsdError):
    errno = _errno.EBUSY


class BuildError(ErofsdError):
    """The builder could not turn a source tree into an image."""


class NameNotStorable(BuildError):
    errno = _errno.ENAMETOOLONG


class SourceChanged(BuildError):
    errno = _errno.EAGAIN


class IntegrityError(ErofsdError):
    """Bytes did not match the digest that pins them."""


class SourceError(ErofsdError):
    """A blob source (layout, HTTP server, registry) failed."""


class SourceTimeout(SourceError):
    errno = _errno.ETIMEDOUT


class AuthError(SourceError, PermissionError):
    errno = _errno.EACCES


class CacheError(ErofsdError):
    """The blob cache could not store or read bytes."""


class NoSpace(CacheError):
    errno = _errno.ENOSPC
