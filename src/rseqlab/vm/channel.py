"""The return channel: the guest's output directory, framed on the second serial port.

The guest writes, in raw mode (no newline translation), one frame::

    RSEQLAB-RETURN <length> <sha256 hex>\\n<length bytes of a gzip'd tar>\\nRSEQLAB-END\\n

to ``/dev/ttyS1``, which QEMU writes to a host file. The serial line works with every kernel
(Debian's cloud kernels build virtio and 9p as modules, the statistics kernels have neither).
:func:`decode` finds the frame and checks its length, checksum and trailer, so a guest that died
while sending, or a corrupted byte, is one clear error instead of a bad trace.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from pathlib import Path

from ..errors import RseqlabError

MAGIC = b"RSEQLAB-RETURN"
TRAILER = b"RSEQLAB-END"
_HEADER = re.compile(rb"RSEQLAB-RETURN (\d+) ([0-9a-f]{64})\r?\n")


class ChannelError(RseqlabError):
    """The guest's data did not come back whole."""


def encode(payload: bytes) -> bytes:
    """What the guest sends (the tests' and the host-side reference of the format)."""
    return (MAGIC + b" %d %s\n" % (len(payload), hashlib.sha256(payload).hexdigest().encode())
            + payload + b"\n" + TRAILER + b"\n")


def decode(blob: bytes) -> bytes:
    """The payload of the first complete frame in ``blob``; :class:`ChannelError` otherwise."""
    headers = list(_HEADER.finditer(blob))
    if not headers:
        if MAGIC in blob:
            raise ChannelError("the guest's return data has a damaged header")
        raise ChannelError("the guest sent no return data (it died before the end of its payload)")
    first: ChannelError | None = None
    for m in headers:  # the first frame that checks out (a payload may itself contain the magic)
        try:
            return _frame(blob, m)
        except ChannelError as exc:
            first = first or exc
    raise first


def _frame(blob: bytes, m: re.Match) -> bytes:
    length, digest = int(m.group(1)), m.group(2).decode()
    start = m.end()
    data = blob[start:start + length]
    if len(data) < length:
        raise ChannelError(f"the guest's return data is truncated: {len(data)} of {length} bytes arrived")
    tail = blob[start + length:start + length + len(TRAILER) + 2]
    if hashlib.sha256(data).hexdigest() != digest:
        raise ChannelError("the guest's return data is corrupted (SHA-256 mismatch)")
    if not tail.lstrip(b"\r\n").startswith(TRAILER):
        raise ChannelError("the guest's return data has no end marker (truncated after the payload)")
    return data


def unpack(payload: bytes, dest: Path) -> list[str]:
    """Extract the tar.gz payload into ``dest``; returns the member names."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:*") as tf:
            names = tf.getnames()
            tf.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ChannelError(f"the guest's return archive cannot be unpacked: {exc}") from None
    return names
