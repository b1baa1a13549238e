#!/usr/bin/env bash
# ferry flash vs bmaptool vs dd on an SD-card-class target: a loop device
# (--direct-io=on) throttled by cgroup v1 blkio to 25 MiB/s write and
# 80 MiB/s read, every measured command run inside that cgroup, the page
# cache dropped before each run, rounds interleaved in a shuffled order.
# Every run's result is compared with the image (cmp, outside the cgroup).
#
#   benches/sd-class.sh [--size-mib N] [--rounds N] [--write-bps N] [--read-bps N]
#
# Needs root, cgroup v1 blkio, losetup, bmaptool, mke2fs, python3.
# Results: a table on stdout and in $WORK/sd-class.md.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SIZE_MIB=256 ROUNDS=3 WBPS=26214400 RBPS=83886080
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mib) SIZE_MIB="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --write-bps) WBPS="$2"; shift 2 ;;
    --read-bps) RBPS="$2"; shift 2 ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
WORK=${FERRY_BENCH_DIR:-/var/tmp/ferry-bench}/sd-$SIZE_MIB
CG=/sys/fs/cgroup/blkio/ferry-sd
mkdir -p "$WORK/res"
rm -f "$WORK"/res/*
cd "$REPO"
cargo build --release --locked -q
FERRY="$REPO/target/release/ferry"
[ -n "${CARGO_TARGET_DIR:-}" ] && FERRY="$CARGO_TARGET_DIR/release/ferry"

# the image: an ext4 rootfs made from the deterministic tree (sparse: free
# space is holes), and its bmap
IMG="$WORK/rootfs.img"
if [ ! -s "$IMG.bmap" ]; then
  rm -rf "$WORK/tree"
  python3 "$REPO/benches/gen-rootfs.py" "$WORK/tree" "$SIZE_MIB" 1 >/dev/null
  mke2fs -q -t ext4 -b 4096 -E root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard \
    -d "$WORK/tree" "$IMG" "${SIZE_MIB}M"
  rm -rf "$WORK/tree"
  bmaptool create "$IMG" >"$IMG.bmap"
fi
IMG_BYTES=$(stat -c %s "$IMG")
MAPPED=$(($(stat -c %b "$IMG") * 512))

# the card
rm -f "$WORK/card.img"
fallocate -l $((IMG_BYTES + (16 << 20))) "$WORK/card.img"
DEV=$(losetup --direct-io=on -f --show "$WORK/card.img")
MAJMIN=$(lsblk -dno MAJ:MIN "$DEV" | tr -d ' ')
cleanup() { losetup -d "$DEV" 2>/dev/null || true; rmdir "$CG" 2>/dev/null || true; }
trap cleanup EXIT
mkdir -p "$CG"
echo "$MAJMIN $WBPS" >"$CG/blkio.throttle.write_bps_device"
echo "$MAJMIN $RBPS" >"$CG/blkio.throttle.read_bps_device"

# run "$@" inside the cgroup; record seconds and peak RSS (KiB)
timed() { # name cmd...
  local name=$1; shift
  sync; echo 3 >/proc/sys/vm/drop_caches
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f %M -o "$WORK/res/$name.rss.tmp" \
    sh -c 'echo $$ > '"$CG"'/cgroup.procs; exec "$@"' sh "$@" >/dev/null
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l >>"$WORK/res/$name.t"
  cat "$WORK/res/$name.rss.tmp" >>"$WORK/res/$name.rss"
  # the card holds the image (unmapped ranges stay zero: nothing writes there)
  cmp -n "$IMG_BYTES" "$IMG" "$DEV" >/dev/null || { echo "$name: the card does not hold the image" >&2; exit 1; }
}
med() { sort -g "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

VARIANTS=(bmaptool ferry-flash ferry-flash-bmap ferry-flash-noverify dd)
for r in $(seq "$ROUNDS"); do
  for v in $(printf '%s\n' "${VARIANTS[@]}" | shuf); do
    case $v in
      bmaptool) timed "$v" bmaptool -q copy --bmap "$IMG.bmap" "$IMG" "$DEV" ;;
      ferry-flash) timed "$v" "$FERRY" -q flash --yes "$IMG" "$DEV" ;;
      ferry-flash-bmap) timed "$v" "$FERRY" -q flash --yes --bmap "$IMG.bmap" "$IMG" "$DEV" ;;
      ferry-flash-noverify) timed "$v" "$FERRY" -q flash --yes --no-verify "$IMG" "$DEV" ;;
      dd) timed "$v" dd if="$IMG" of="$DEV" bs=4M oflag=direct conv=fsync,sparse status=none ;;
    esac
  done
done

B=$(med "$WORK/res/bmaptool.t")
{
  echo "SD-class target: write $((WBPS >> 20)) MiB/s, read $((RBPS >> 20)) MiB/s; image $((IMG_BYTES >> 20)) MiB, $((MAPPED >> 20)) MiB mapped; medians of $ROUNDS interleaved rounds"
  echo
  echo "| command | seconds | / bmaptool | peak RSS |"
  echo "|---|---|---|---|"
  for v in "${VARIANTS[@]}"; do
    t=$(med "$WORK/res/$v.t")
    printf '| %s | %.2f | %.2f | %.1f MiB |\n' "$v" "$t" "$(echo "$t / $B" | bc -l)" "$(echo "$(med "$WORK/res/$v.rss") / 1024" | bc -l)"
  done
} | tee "$WORK/sd-class.md"
