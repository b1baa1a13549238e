#!/usr/bin/env bash
# Regenerate the bad-input fixtures under tests/data/<failure-mode>/.
# Keys are made fresh and the private halves thrown away: only signing/dev.pub
# and tests/data/keys/other.pub stay. Each fixture dir holds bundle.ferry and
# `expect`: the exit code and a phrase the one-line error must contain.
# Usage: tests/data/make-fixtures.sh path/to/ferry
set -euo pipefail
FERRY=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$FERRY" key generate dev >/dev/null
"$FERRY" key generate other >/dev/null
python3 - <<'PY'
import os, random
r = random.Random(7)
open("kernel", "wb").write(bytes(r.getrandbits(8) for _ in range(30_000)))
open("rootfs", "wb").write(bytes(r.getrandbits(8) for _ in range(20_000)) + bytes(180_000) + b"end")
open("k3s", "wb").write(b"#!/bin/sh\necho k3s stand-in\n")
PY
export SOURCE_DATE_EPOCH=1767225600
mk() { "$FERRY" -q bundle create --board qemu-aarch64-virt --version "$1" --kernel kernel --rootfs rootfs --k3s k3s \
        --chunk-size 65536 --key "$2" -o "$3" >/dev/null; }
fix() { mkdir -p "$here/$1"; cp "$2" "$here/$1/bundle.ferry"; printf '%s\n%s\n' "$3" "$4" > "$here/$1/expect"; }
mk 1.0.0 dev.key good.ferry
fix good good.ferry 0 "ok:"
# patch FILE OUT PY-EXPR-ON-MANIFEST-DICT: rewrite the manifest, keep payloads, re-sign with dev.key
patch() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, struct, sys
src, out, expr = sys.argv[1:4]
b = open(src, "rb").read()
magic, fmt, mlen, slen, res = struct.unpack("<8sIIII", b[:24])
m = json.loads(b[24:24 + mlen])
exec(expr)
mb = json.dumps(m, indent=2).encode()
open(out, "wb").write(struct.pack("<8sIIII", magic, fmt, len(mb), 0, 0) + mb + b[24 + mlen + slen:])
PY
  "$FERRY" bundle sign --replace --no-review --key dev.key "$2" >/dev/null
}
bytes_patch() { python3 -c "
import sys; b = bytearray(open('$1','rb').read()); $3; open('$2','wb').write(b)"; }

bytes_patch good.ferry x.ferry "b[0] ^= 0xff";                           fix bad-magic x.ferry 10 "not a ferry bundle"
bytes_patch good.ferry x.ferry "b[8] = 3";                               fix unknown-format x.ferry 11 "unsupported bundle format version 3"
bytes_patch good.ferry x.ferry "b[12:16] = (8*1024*1024+1).to_bytes(4,'little')"; fix oversized-manifest x.ferry 13 "exceeds the limit"
head -c 10 good.ferry > x.ferry;                                          fix truncated-header x.ferry 15 "truncated in header"
head -c 300 good.ferry > x.ferry;                                         fix truncated-manifest x.ferry 15 "truncated in manifest"
head -c $(( $(stat -c %s good.ferry) - 1000 )) good.ferry > x.ferry;      fix truncated-payload x.ferry 15 "truncated in payload"
bytes_patch good.ferry x.ferry "i = b.index(b'qemu-aarch64-virt'); b[i] ^= 1"; fix flipped-manifest-byte x.ferry 19 "does not verify"
bytes_patch good.ferry x.ferry "import struct; m = struct.unpack('<I', b[12:16])[0]; b[24 + m + 20] ^= 1"; fix flipped-signature-byte x.ferry 19 "does not verify"
bytes_patch good.ferry x.ferry "b[len(b) - 5000] ^= 0x10";                fix flipped-payload-byte x.ferry 20 "digest mismatch"
mk 1.0.0 other.key x.ferry;                                               fix wrong-key x.ferry 18 "0 valid, 1 required"
cp good.ferry x.ferry; echo garbage >> x.ferry;                           fix trailing-garbage x.ferry 24 "trailing data"
patch good.ferry x.ferry "m['payloads'][1]['size'] += 1";                 fix payload-size-lie x.ferry 16 "chunks add up to"
patch good.ferry x.ferry "m['payloads'][1]['installed_size'] -= 7";       fix installed-size-lie x.ferry 21 "wrong size"
patch good.ferry x.ferry "m['payloads'][0]['installed_sha256'] = '00' * 32"; fix installed-digest-wrong x.ferry 23 "installed digest mismatch"
patch good.ferry x.ferry "m['payloads'][0]['window_log_max'] = 10";       fix window-too-large x.ferry 22 "does not decompress"
patch good.ferry x.ferry "m['requires'] = ['delta-v1']";                  fix unknown-requirement x.ferry 17 "delta-v1"
patch good.ferry x.ferry "m['payloads'][0]['name'] = '../../etc/passwd'"; fix path-traversal-name x.ferry 16 "not safe"
patch good.ferry x.ferry "m['payloads'][1]['installed_size'] = 2**62; m['payloads'][1]['chunks'] = m['payloads'][1]['chunks'] * 1"; fix huge-declared-size x.ferry 16 "chunks for"
cp good.ferry x.ferry; "$FERRY" bundle sign --yes --key other.key x.ferry >/dev/null; fix two-signatures x.ferry 0 "ok:"
mk 0.9.0 dev.key x.ferry;                                                 fix downgrade x.ferry 31 "downgrade refused"
"$FERRY" -q bundle create --board raspberry-pi-4 --version 2.0.0 --kernel kernel --rootfs rootfs --k3s k3s \
  --chunk-size 65536 --key dev.key -o x.ferry >/dev/null;                 fix wrong-board x.ferry 30 "is for board"
mkdir -p "$repo/signing" "$here/keys"
cp dev.pub "$repo/signing/dev.pub"
cp other.pub "$here/keys/other.pub"
echo "fixtures written to $here"
