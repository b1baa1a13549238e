#!/usr/bin/python3
"""Deterministic rootfs-like tree for the ferry benchmarks.

gen-rootfs.py DIR SIZE_MIB [SEED]

Writes about 70% of SIZE_MIB of files under DIR (the rest of the ext4 image
made from it stays free, i.e. zeros), in three kinds, by bytes:
  30% incompressible  (var/cache, firmware: already-compressed data)
  40% binary-like     (usr/lib, usr/bin: 4 KiB blocks, 35% random, 10% zero,
                       55% skewed 16-symbol alphabet, ~3 bits/byte)
  30% text-like       (usr/share: random slices of a 64 KiB word list)
The same SEED and SIZE_MIB give the same bytes on any machine (Python's
random.Random is specified). zstd -9 compresses the resulting ext4 image
by roughly 2.5x.
"""
import os
import random
import sys

def main():
    out, size_mib = sys.argv[1], int(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    rng = random.Random(seed)
    total = size_mib * (1 << 20) * 70 // 100

    # 16 symbols, skewed (Zipf-ish) -> ~3 bits per byte
    weights = [64, 40, 30, 24, 18, 14, 12, 10, 9, 8, 7, 6, 5, 4, 3, 2]
    syms = b"\x00\x01\x02\x03\x04\xff\x48\x89\x8b\xe8\x24\x45\x0f\xc3\x10\x20"
    table = bytearray()
    for s, w in zip(syms, weights):
        table += bytes([s]) * w
    assert len(table) == 256
    table = bytes(table)

    words = []
    for _ in range(8192):
        n = rng.randint(2, 10)
        words.append(bytes(rng.choice(b"etaoinshrdlucmfwypvbgkqjxz") for _ in range(n)))
    dictionary = b" ".join(words)[: 64 * 1024]

    def incompressible(n):
        return rng.randbytes(n)

    def binary(n):
        parts = []
        left = n
        while left > 0:
            k = min(4096, left)
            r = rng.random()
            if r < 0.35:
                parts.append(rng.randbytes(k))
            elif r < 0.45:
                parts.append(bytes(k))
            else:
                parts.append(rng.randbytes(k).translate(table))
            left -= k
        return b"".join(parts)

    def text(n):
        parts = []
        left = n
        dl = len(dictionary)
        while left > 0:
            k = min(rng.randint(8, 96), left)
            o = rng.randrange(0, dl - k)
            parts.append(dictionary[o : o + k])
            if rng.random() < 0.1:
                parts.append(b"\n")
                left -= 1
            left -= k
        return b"".join(parts)[:n]

    kinds = [
        ("var/cache/pkg", 0.30, incompressible),
        ("usr/lib", 0.40, binary),
        ("usr/share/doc", 0.30, text),
    ]
    nfiles = 0
    for sub, frac, make in kinds:
        budget = int(total * frac)
        i = 0
        while budget > 0:
            n = min(budget, max(512, int(rng.lognormvariate(11.5, 1.5))), 8 << 20)
            d = os.path.join(out, sub, "d%02d" % (i % 37))
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "f%05d" % i), "wb") as f:
                f.write(make(n))
            budget -= n
            i += 1
        nfiles += i
    print("%d files, %d bytes" % (nfiles, total))

main()
