#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/seeds/ from the version-1 fixture log in
tests/fixtures/v1/clean (real segments, indexes, checkpoint and meta written by the engine).
Run from the repository root: python3 fuzz/make_seeds.py"""
import os
import struct

FIX = "tests/fixtures/v1/clean"
OUT = "fuzz/seeds"


def read(name):
    with open(os.path.join(FIX, name), "rb") as f:
        return f.read()


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def batches(seg):
    pos = 32
    while pos + 64 <= len(seg):
        length = struct.unpack_from("<I", seg, pos + 12)[0]
        if length < 65 or pos + length > len(seg):
            break
        yield seg[pos:pos + length]
        pos += length


segs = sorted(n for n in os.listdir(FIX) if n.endswith(".log"))
all_batches = [b for n in segs for b in batches(read(n))]
lz4 = [b for b in all_batches if struct.unpack_from("<H", b, 10)[0] == 1]
plain = [b for b in all_batches if struct.unpack_from("<H", b, 10)[0] == 0]

# batch_decode: single batches (plain and LZ4), several in a row, a whole segment body.
for i, b in enumerate(plain[:2] + lz4[:2]):
    put("batch_decode", f"batch-{i}", b)
put("batch_decode", "three-batches", b"".join(all_batches[:3]))
put("batch_decode", "segment-body", read(segs[0])[32:])

# records: mode, u16 count, u32 claimed length, section.
for i, b in enumerate(plain[:3]):
    count = struct.unpack_from("<I", b, 48)[0]
    put("records", f"plain-{i}", bytes([0]) + struct.pack("<HI", count, 0) + b[64:])
    put("records", f"via-lz4-{i}", bytes([1]) + struct.pack("<HI", count, 0) + b[64:])
for i, b in enumerate(lz4[:3]):
    count = struct.unpack_from("<I", b, 48)[0]
    records_len = struct.unpack_from("<I", b, 52)[0]
    put("records", f"raw-lz4-{i}", bytes([2]) + struct.pack("<HI", count, records_len) + b[64:])

# segment_recovery: mode, u16 keep, bytes (whole files, a tail after the header, a torn tail).
seg = read(segs[0])
put("segment_recovery", "whole-sealed", bytes([0]) + struct.pack("<H", 0) + seg)
put("segment_recovery", "whole-active", bytes([2]) + struct.pack("<H", 0) + seg)
put("segment_recovery", "active-body-after-header", bytes([6]) + struct.pack("<H", 32) + seg[32:])
put("segment_recovery", "active-torn-no-checkpoint", bytes([14]) + struct.pack("<H", 32) + seg[32:-40])
put("segment_recovery", "sealed-header-only", bytes([4]) + struct.pack("<H", 32))

# index_checkpoint: file selector, keep flag, keep length, bytes.
for sel, name in [(0, segs[0][:-4] + ".index"), (2, segs[0][:-4] + ".timeindex"),
                  (4, "recovery.checkpoint"), (6, "log.meta")]:
    put("index_checkpoint", f"whole-{sel}", bytes([sel, 0, 0]) + read(name))
    put("index_checkpoint", f"after-header-{sel}", bytes([sel, 1, 32]) + read(name)[32:])
put("index_checkpoint", "active-index", bytes([1, 0, 0]) + read(segs[-1][:-4] + ".index"))
put("index_checkpoint", "active-timeindex", bytes([3, 0, 0]) + read(segs[-1][:-4] + ".timeindex"))

# cli_args: NUL-separated arguments.
put("cli_args", "policies", b"\0".join([b"always", b"never", b"100ms", b"4096b", b"0ms", b"b", b"ms"]))
put("cli_args", "names", b"\0".join([b"default", b"orders-0", b"..", b".", b"a/b", b"/abs", b""]))

# model: 3-byte operations (kind, a, b).
def ops(*triples):
    return bytes(x for t in triples for x in t)

put("model", "appends-reads", ops((0, 3, 40), (1, 8, 10), (2, 1, 0), (3, 2, 0), (6, 0, 0)))
put("model", "crash-torn", ops((1, 9, 80), (0, 9, 80), (0, 2, 5), (8, 1, 0), (2, 0, 0)))
put("model", "truncate-retention", ops(*([(1, 9, 89)] * 12), (4, 1, 0), (5, 0, 0), (7, 0, 0), (8, 0, 0)))
put("model", "rolls-and-crash", ops(*([(0, 9, 89)] * 20), (8, 0, 0), (1, 3, 3), (3, 5, 0)))

# index_checkpoint selector 7: a quarantine file (header, reason, data) with a valid CRC.
import zlib
reason = b"Log::truncate to offset 5"
data = read(segs[0])[32:332]
h = struct.pack("<IIHHIQQQQQQ", 0, 0x31515453, 1, len(reason), 2, 5, 9, 0, 400, 300, 300)
crc = zlib.crc32(h[4:] + reason + data) & 0xFFFFFFFF
put("index_checkpoint", "quarantine-file", bytes([7, 0, 0]) + struct.pack("<I", crc) + h[4:] + reason + data)
