"""Re-encode a version 7 trace.dat with another compressor (tests only).

Debian's trace-cmd is built with zstd alone (``trace-cmd list -c``), so a zlib trace.dat cannot be
recorded here; this turns a real zstd one into one. The layout follows trace-cmd.dat.v7(5): after
the initial header (which names the compressor) the file is a run of sections, each a 16-byte
header (id, flags, description string id, size) and its body; options sections (never compressed
by trace-cmd) point at the other sections by file offset, a BUFFER option at its flyrecord section
and each CPU's data in it. A compressed section's body is (compressed size, size, data); a
compressed flyrecord holds, per CPU, a chunk count and (compressed size, size, data) chunks.
Every section is rewritten in its order, recompressed, and every offset moved to match.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import zstandard

MAGIC = b"\x17\x08\x44tracing"
OPT_DONE, OPT_BUFFER = 0, 3
OFFSET_OPTIONS = (16, 17, 18, 19, 20, 21)  # HEADER_INFO ... CMDLINES: the option is a section's offset
COMPRESSED = 1


def _codec(name: str):
    if name == "zlib":
        return zlib.compress, zlib.ZLIB_VERSION
    if name == "zstd":
        return zstandard.ZstdCompressor(level=9).compress, ".".join(map(str, zstandard.ZSTD_VERSION))
    raise ValueError(name)


def _cstr(data: bytes, at: int) -> tuple[bytes, int]:
    end = data.index(b"\0", at)
    return data[at:end], end + 1


def _options(body: bytes):
    """(id, data) of each option in an options section's body, up to and with DONE."""
    q = 0
    while q + 6 <= len(body):
        oid, size = struct.unpack_from("<HI", body, q)
        yield oid, q + 6, body[q + 6:q + 6 + size]
        q += 6 + size
        if oid == OPT_DONE:
            return


def _buffer_cpus(data: bytes) -> tuple[int, list[tuple[int, int, int]]]:
    """A BUFFER option: where its (cpu, offset, size) list starts, and the list."""
    _, at = _cstr(data, 8)  # the instance's name
    _, at = _cstr(data, at)  # its clock
    _page_size, count = struct.unpack_from("<II", data, at)
    at += 8
    return at, [struct.unpack_from("<IQQ", data, at + 20 * k) for k in range(count)]


def recode(src: str | Path, dst: str | Path, codec: str = "zlib") -> None:
    """Write ``src`` (a v7 trace.dat) to ``dst`` compressed with ``codec`` (zlib or zstd)."""
    d = Path(src).read_bytes()
    assert d.startswith(MAGIC)
    version, at = _cstr(d, len(MAGIC))
    assert version == b"7", version
    page_size = struct.unpack_from("<I", d, at + 2)[0]
    fixed = d[:at + 6]
    algo, at = _cstr(d, at + 6)
    _, at = _cstr(d, at)
    assert algo == b"zstd", algo
    first_options = struct.unpack_from("<Q", d, at)[0]
    sections_at = at + 8
    unzstd = zstandard.ZstdDecompressor()
    compress, codec_version = _codec(codec)

    # Every section in file order, and what each BUFFER option says of its CPUs' data.
    sections, off = [], sections_at
    while off < len(d):
        sid, flags, desc, size = struct.unpack_from("<HHIQ", d, off)
        sections.append((off, sid, flags, desc, size))
        off += 16 + size
    assert off == len(d), "trailing bytes after the last section"
    cpus_of = {}  # flyrecord section offset -> [(cpu, offset, size)]
    for off, sid, flags, _, size in sections:
        if sid == OPT_DONE:
            assert not flags & COMPRESSED, "a compressed options section"
            for oid, _, data in _options(d[off + 16:off + 16 + size]):
                if oid == OPT_BUFFER:
                    cpus_of[struct.unpack_from("<Q", data)[0]] = _buffer_cpus(data)[1]

    def recompress(blob: bytes, usize: int) -> bytes:
        return compress(unzstd.decompress(blob, max_output_size=usize))

    header = fixed + b"zlib\0" if codec == "zlib" else fixed + b"zstd\0"
    header += codec_version.encode() + b"\0"
    moved, cpu_moved = {}, {}  # old offset -> new offset (sections; CPU data: (offset, size))
    pieces, pos = [], len(header) + 8
    for off, sid, flags, desc, size in sections:
        moved[off] = pos
        body = d[off + 16:off + 16 + size]
        if off in cpus_of and flags & COMPRESSED:
            out = bytearray()
            for cpu, coff, csize in sorted(cpus_of[off], key=lambda c: c[1]):
                if not csize:
                    cpu_moved[(off, cpu)] = (0, 0)
                    continue
                pad = -(pos + 16 + len(out)) % page_size  # each CPU's data starts on a page, as trace-cmd writes it
                out += bytes(pad)
                start = len(out)
                count = struct.unpack_from("<I", d, coff)[0]
                q, chunks = coff + 4, []
                for _ in range(count):
                    cs, us = struct.unpack_from("<II", d, q)
                    new = recompress(d[q + 8:q + 8 + cs], us)
                    chunks.append(struct.pack("<II", len(new), us) + new)
                    q += 8 + cs
                out += struct.pack("<I", count) + b"".join(chunks)
                # trace-cmd 3.1 records the size without the count's own 4 bytes: keep what it did
                cpu_moved[(off, cpu)] = (pos + 16 + start, len(out) - start - (q - coff - csize))
            body = bytes(out)
        elif off in cpus_of:
            raise NotImplementedError("an uncompressed flyrecord section in a compressed file")
        elif flags & COMPRESSED:
            cs, us = struct.unpack_from("<II", body)
            new = recompress(body[8:8 + cs], us)
            body = struct.pack("<II", len(new), us) + new
        pieces.append([sid, flags, desc, bytearray(body)])
        pos += 16 + len(body)

    for (sid, flags, _desc, body), (off, *_) in zip(pieces, sections):
        if sid != OPT_DONE:
            continue
        for oid, at, data in _options(bytes(body)):
            if oid in OFFSET_OPTIONS or (oid == OPT_DONE and struct.unpack_from("<Q", data)[0]):
                struct.pack_into("<Q", body, at, moved[struct.unpack_from("<Q", data)[0]])
            elif oid == OPT_BUFFER:
                old = struct.unpack_from("<Q", data)[0]
                struct.pack_into("<Q", body, at, moved[old])
                list_at, cpus = _buffer_cpus(data)
                for k, (cpu, _, _) in enumerate(cpus):
                    struct.pack_into("<IQQ", body, at + list_at + 20 * k, cpu, *cpu_moved[(old, cpu)])

    with open(dst, "wb") as f:
        f.write(header + struct.pack("<Q", moved[first_options]))
        for sid, flags, desc, body in pieces:
            f.write(struct.pack("<HHIQ", sid, flags, desc, len(body)) + body)
