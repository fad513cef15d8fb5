"""Open a file as a binary stream, decompressing by extension: .gz, .bz2, .zst, else plain.

Every stream raises on a truncated or corrupt file (EOFError / OSError) instead of ending
early: gzip and bz2 do this themselves; zstandard's stream_reader does not, so .zst files
go through `_ZstdReader`, which checks that the last frame was complete.
"""

from __future__ import annotations

import bz2
import gzip
import io
from pathlib import Path
from typing import BinaryIO, cast

COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}


def compression_of(path: Path) -> str | None:
    return COMPRESSIONS.get(path.suffix.lower())


def strip_compression(path: Path) -> str:
    """The name without a compression suffix: 'a.jsonl.gz' -> 'a.jsonl'."""
    return path.stem if compression_of(path) else path.name


def open_binary(path: Path) -> BinaryIO:
    """A buffered binary stream of the decompressed bytes (supports readline(limit))."""
    kind = compression_of(path)
    # cast: GzipFile and BZ2File are binary file objects, though typeshed does not declare them BinaryIO
    if kind == "gzip":
        return cast(BinaryIO, gzip.open(path, "rb"))
    if kind == "bz2":
        return cast(BinaryIO, bz2.open(path, "rb"))
    if kind == "zstd":
        return io.BufferedReader(_ZstdReader(open(path, "rb")), buffer_size=1 << 20)
    return open(path, "rb")


class _ZstdReader(io.RawIOBase):
    """Decompress concatenated zstd frames; EOFError if the file ends inside a frame."""

    def __init__(self, raw: BinaryIO, chunk_size: int = 1 << 20):
        import zstandard  # imported here: only .zst inputs need it

        self._error = zstandard.ZstdError
        self._raw, self._chunk_size = raw, chunk_size
        self._new_decoder = zstandard.ZstdDecompressor().decompressobj
        self._decoder = self._new_decoder()
        self._pending = b""  # decompressed bytes not yet handed out
        self._in_frame = False  # fed bytes of a frame that has not ended yet

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = self._raw.read(self._chunk_size)
            if not chunk:
                if self._in_frame:
                    raise EOFError("zstd stream ended inside a frame (file truncated?)")
                return 0
            self._feed(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _feed(self, data: bytes) -> None:
        while data:
            self._in_frame = True
            try:
                self._pending += self._decoder.decompress(data)
            except self._error as exc:  # not zstd data, or corrupt: an OSError, like gzip's and bz2's
                raise OSError(f"not a valid zstd stream ({exc})") from None
            if not self._decoder.eof:
                return
            # a frame ended; what follows (if anything) starts the next frame
            data, self._decoder, self._in_frame = self._decoder.unused_data, self._new_decoder(), False

    def close(self) -> None:
        self._raw.close()
        super().close()
