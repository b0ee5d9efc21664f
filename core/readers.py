"""The io plumbing of a seekable read-only file of known size, shared by storage's ranged reader
and tar members (``core.tar.MemberReader``): position, seeks, ``readinto``. Seeks never do I/O."""

from __future__ import annotations

import io
from typing import Any


class SizedReader(io.RawIOBase):
    """A seekable binary reader of ``size`` bytes; a subclass reads ``[tell(), end)`` in :meth:`read`."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size
        self._pos = 0

    @property
    def size(self) -> int:
        """The file's size in bytes."""
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence}")
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def _end_of_read(self, size: int | None) -> int:
        """Where a read of ``size`` bytes from the current position ends (clamped to the file)."""
        if self.closed:
            raise ValueError("read of a closed file")
        return self._size if size is None or size < 0 else min(self._size, self._pos + size)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)
