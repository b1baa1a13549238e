#!/usr/bin/env bash
# ferry on an SD-card-class target, side by side with dd, RAUC, SWUpdate and
# bmaptool in the same interleaved rounds.
#
# The card: loop devices (--direct-io=on, so no second page cache) throttled
# by cgroup v1 blkio to 25 MiB/s write and 80 MiB/s read; every measured
# command (and RAUC's service) runs inside that cgroup; the page cache is
# dropped before each run; the variants of a round run in a shuffled order.
# Sources (bundles, images) sit on the fast disk, as a download would stream.
#
#   install: ferry install of a signed bundle into rootfs_b of a ferry disk
#            vs dd oflag=direct of the same bytes to the same partition,
#            vs dd + a read-back of them (the I/O ferry does),
#            vs RAUC 1.8 (plain bundle, squashfs zstd -9, 1 MiB blocks, raw slot
#            on the same partition), vs SWUpdate (zstd, installed-directly).
#            The slot is zeroed before every run and compared with the image
#            after it: every variant must leave the right bytes.
#   flash:   ferry flash of a sparse ext4 image vs bmaptool copy --bmap vs dd;
#            the card must hold the image afterwards.
#
#   benches/sd-class.sh [--size-mib N] [--rounds N] [--write-bps N] [--read-bps N]
#
# Needs root, cgroup v1 blkio, losetup, rauc, swupdate, dbus-daemon, bmaptool,
# mke2fs, mksquashfs, zstd, cpio, openssl, python3, GNU time.
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
    -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "sd-class.sh needs root (losetup, cgroups, drop_caches)" >&2; exit 2; }
WORK=${FERRY_BENCH_DIR:-/var/tmp/ferry-bench}/sd-$SIZE_MIB
CG=/sys/fs/cgroup/blkio/ferry-sd
[ -d /sys/fs/cgroup/blkio ] || { echo "no cgroup v1 blkio hierarchy at /sys/fs/cgroup/blkio" >&2; exit 2; }
mkdir -p "$WORK/res"
rm -rf "$WORK"/res/* "$WORK/run"
mkdir -p "$WORK/run"
cd "$REPO"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/ferry/bench-target}
cargo build --release --locked -q
FERRY="$CARGO_TARGET_DIR/release/ferry"
say() { echo "== $*" >&2; }

# ------------------------------------------------------------------ test data
# An ext4 rootfs of the deterministic tree (sparse: free space is holes),
# its bmap, a board whose rootfs slots fit it, a ferry bundle, a RAUC bundle
# and an SWUpdate image of the same bytes.
D="$WORK/data"
IMG="$D/rootfs.img"
STAMP="2 $(cat "$REPO/benches/gen-rootfs.py" "$REPO/benches/sd-class.sh" "$REPO"/src/bundle/*.rs | sha256sum | cut -c1-16)"
if [ "$(cat "$D/stamp" 2>/dev/null)" != "$STAMP" ]; then
  say "test data in $D"
  rm -rf "$D"
  mkdir -p "$D/tree" "$D/bench-board" "$D/rauc/content" "$D/swu"
  python3 "$REPO/benches/gen-rootfs.py" "$D/tree" "$SIZE_MIB" 1 >/dev/null
  mke2fs -q -t ext4 -b 4096 -U 6f8b1c2e-7a3d-4e5f-9a0b-1c2d3e4f5a6b \
    -E hash_seed=6f8b1c2e-7a3d-4e5f-9a0b-1c2d3e4f5a6b,root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard \
    -d "$D/tree" "$IMG" "${SIZE_MIB}M"
  rm -rf "$D/tree"
  bmaptool create "$IMG" >"$IMG.bmap"
  R=$((SIZE_MIB + 4))
  cp "$REPO/board/qemu-aarch64-virt/boot.cmd" "$D/bench-board/"
  sed -e 's/^name = "qemu-aarch64-virt"/name = "bench-board"/' -e "/^size_mib = 96/s/96/$R/" \
    -e "s/^disk_size_mib = 420/disk_size_mib = $((32 + 64 * 2 + 16 * 2 + 32 + 2 * R + 4))/" \
    "$REPO/board/qemu-aarch64-virt.toml" >"$D/board.toml"
  "$FERRY" key generate bench --dir "$D" >/dev/null
  # a slot holds one whole release: the bundle carries a (small) kernel and k3s too
  head -c 262144 /dev/urandom >"$D/kernel.img"
  head -c 262144 /dev/urandom >"$D/k3s.img"
  for v in 1.0.0 2.0.0; do
    "$FERRY" -q bundle create --board qemu-aarch64-virt --version $v --rootfs "$IMG" \
      --kernel "$D/kernel.img" --k3s "$D/k3s.img" \
      --key "$D/bench.key" -o "$D/v$v.ferry" >/dev/null
  done
  # RAUC: a plain bundle (verity needs device-mapper), compressed like ferry's
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$D/key.pem" -out "$D/cert.pem" -days 3650 \
    -subj /CN=ferry-bench -addext extendedKeyUsage=emailProtection 2>/dev/null
  ln "$IMG" "$D/rauc/content/rootfs.img"
  printf '[update]\ncompatible=ferry-bench\nversion=2.0.0\n\n[bundle]\nformat=plain\n\n[image.rootfs]\nfilename=rootfs.img\n' \
    >"$D/rauc/content/manifest.raucm"
  rauc bundle --cert="$D/cert.pem" --key="$D/key.pem" \
    --mksquashfs-args="-comp zstd -Xcompression-level 9 -b 1M" "$D/rauc/content" "$D/zstd.raucb" >/dev/null 2>&1
  # SWUpdate: sw-description signed with CMS, the image zstd -9 and streamed
  # straight into the device (installed-directly); device path filled at run time
  zstd -q -9 "$IMG" -o "$D/swu/rootfs.zst"
  echo "$STAMP" >"$D/stamp"
fi
IMG_BYTES=$(stat -c %s "$IMG")
MAPPED=$(($(stat -c %b "$IMG") * 512))

# ------------------------------------------------------------------ the cards
LOOPS=""
cleanup() {
  set +e
  [ -n "${RAUC_PID:-}" ] && kill "$RAUC_PID" 2>/dev/null
  [ -n "${DBUS_PID:-}" ] && kill "$DBUS_PID" 2>/dev/null
  for l in $LOOPS; do losetup -d "$l" 2>/dev/null; done
  rmdir "$CG" 2>/dev/null
}
trap cleanup EXIT
mkdir -p "$CG"
throttle() { # dev
  local mm
  mm=$(lsblk -dno MAJ:MIN "$1" | tr -d ' ')
  echo "$mm $WBPS" >"$CG/blkio.throttle.write_bps_device"
  echo "$mm $RBPS" >"$CG/blkio.throttle.read_bps_device"
}
attach() { # VAR losetup-args...
  local var=$1 l
  shift
  l=$(losetup --direct-io=on -f --show "$@")
  LOOPS="$LOOPS $l"
  throttle "$l"
  printf -v "$var" '%s' "$l"
}
R=$WORK/run
# install card: a ferry disk with slot A = 1.0.0; rootfs_b also as its own
# loop device (same bytes of the same file) for RAUC's and SWUpdate's raw slot
"$FERRY" -q image build --board "$D/board.toml" --bundle "$D/v1.0.0.ferry" --key "$D/bench.pub" \
  -o "$R/card.img" --state-dir "$R/dev/state" >/dev/null
attach CARD "$R/card.img"
read -r OFF PSIZE < <(sfdisk -J "$R/card.img" | python3 -c 'import json,sys; t=json.load(sys.stdin)["partitiontable"]; p=next(p for p in t["partitions"] if p.get("name")=="rootfs_b"); print(p["start"]*t["sectorsize"], p["size"]*t["sectorsize"])')
attach SLOT --offset "$OFF" --sizelimit "$PSIZE" "$R/card.img"
# flash card
fallocate -l $((IMG_BYTES + (16 << 20))) "$R/flash.img"
attach FLASH "$R/flash.img"

mkdir -p "$R/dev/keys"
cp "$D/bench.pub" "$R/dev/keys/"
echo "ferry.slot=a" >"$R/dev/cmdline"
cat >"$R/dev/ferry.toml" <<EOF
board = "$D/board.toml"
disk = "$CARD"
state_dir = "$R/dev/state"
keyring = "$R/dev/keys"
cmdline = "$R/dev/cmdline"
boot_id = "$R/dev/boot_id"
reboot = "record"
EOF

# RAUC on a private system bus, its raw slot B = the same partition
. "$REPO/benches/rauc.sh"
rauc_setup "$R/rauc" "$D/cert.pem" /dev/null "$SLOT"

# SWUpdate's image for this run's slot device
SWU=$R/rootfs.swu
(
  cd "$D/swu"
  sha=$(sha256sum rootfs.zst | cut -c1-64)
  cat >"$R/sw-description" <<EOF
software = {
  version = "2.0.0";
  hardware-compatibility = [ "1.0" ];
  images: ( {
    filename = "rootfs.zst";
    device = "$SLOT";
    type = "raw";
    compressed = "zstd";
    installed-directly = true;
    sha256 = "$sha";
  } );
}
EOF
  openssl cms -sign -in "$R/sw-description" -out "$R/sw-description.sig" -signer "$D/cert.pem" \
    -inkey "$D/key.pem" -outform DER -nosmimecap -binary
  cp "$R/sw-description" "$R/sw-description.sig" .
  printf '%s\n' sw-description sw-description.sig rootfs.zst | cpio -o -H crc --quiet >"$SWU"
)

# ------------------------------------------------------------------ measuring
# run "$@" inside the cgroup; record seconds and peak RSS (KiB)
timed() { # name cmd...
  local name=$1 t0 t1
  shift
  sync
  echo 3 >/proc/sys/vm/drop_caches
  t0=$(date +%s%N)
  if ! /usr/bin/time -f %M -o "$R/rss.tmp" \
    sh -c 'echo $$ > '"$CG"'/cgroup.procs; exec "$@"' sh "$@" >"$R/out.txt" 2>&1; then
    echo "$name failed:" >&2
    tail -5 "$R/out.txt" >&2
    exit 1
  fi
  t1=$(date +%s%N)
  echo "$(((t1 - t0) / 1000000))" >>"$WORK/res/$name.ms"
  cat "$R/rss.tmp" >>"$WORK/res/$name.rss"
}
# the slot, zeroed outside the cgroup before an install variant
zero_slot() {
  dd if=/dev/zero of="$R/card.img" bs=4M count=$((IMG_BYTES >> 22)) seek="$OFF" oflag=seek_bytes \
    conv=notrunc,fsync status=none
}
check_slot() { # name
  sync
  echo 3 >/proc/sys/vm/drop_caches
  cmp -n "$IMG_BYTES" -i "0:$OFF" "$IMG" "$R/card.img" >/dev/null ||
    { echo "$1: rootfs_b does not hold the image" >&2; exit 1; }
}
check_flash() { # name
  sync
  echo 3 >/proc/sys/vm/drop_caches
  cmp -n "$IMG_BYTES" "$IMG" "$R/flash.img" >/dev/null ||
    { echo "$1: the card does not hold the image" >&2; exit 1; }
  dd if=/dev/zero of="$R/flash.img" bs=4M count=$((IMG_BYTES >> 22)) conv=notrunc,fsync status=none
}
BOOTN=0
rauc_install() {
  sh -c 'echo $$ > '"$CG"'/cgroup.procs; exec rauc service --conf='"$R"'/rauc/system.conf --override-boot-slot=A' \
    >>"$R/rauc/service.log" 2>&1 &
  RAUC_PID=$!
  rauc_wait
  timed rauc rauc install "$D/zstd.raucb"
  awk '/VmHWM/ {print $2}' "/proc/$RAUC_PID/status" >>"$WORK/res/rauc.hwm"
  kill "$RAUC_PID"
  wait "$RAUC_PID" 2>/dev/null || true
  RAUC_PID=
}
variant() {
  case $1 in
    ferry-install)
      zero_slot
      BOOTN=$((BOOTN + 1))
      echo "boot-$BOOTN" >"$R/dev/boot_id"
      timed "$1" "$FERRY" -q --config "$R/dev/ferry.toml" install "$D/v2.0.0.ferry" --no-reboot
      check_slot "$1"
      "$FERRY" -q --config "$R/dev/ferry.toml" rollback >/dev/null 2>&1
      ;;
    dd-install)
      zero_slot
      timed "$1" dd if="$IMG" of="$CARD" bs=4M oflag=direct,seek_bytes seek="$OFF" conv=notrunc,fsync status=none
      check_slot "$1"
      ;;
    dd-readback)
      zero_slot
      timed "$1" sh -c "dd if='$IMG' of='$CARD' bs=4M oflag=direct,seek_bytes seek=$OFF conv=notrunc,fsync status=none &&
        dd if='$CARD' bs=4M iflag=direct,skip_bytes,count_bytes skip=$OFF count=$IMG_BYTES status=none | sha256sum"
      check_slot "$1"
      ;;
    rauc) zero_slot; rauc_install; check_slot "$1" ;;
    swupdate)
      zero_slot
      timed "$1" swupdate -H bench:1.0 -k "$D/cert.pem" -i "$SWU" -l 2
      check_slot "$1"
      ;;
    ferry-flash) timed "$1" "$FERRY" -q flash --yes "$IMG" "$FLASH"; check_flash "$1" ;;
    ferry-flash-noverify) timed "$1" "$FERRY" -q flash --yes --no-verify "$IMG" "$FLASH"; check_flash "$1" ;;
    bmaptool) timed "$1" bmaptool -q copy --bmap "$IMG.bmap" "$IMG" "$FLASH"; check_flash "$1" ;;
    dd-image) timed "$1" dd if="$IMG" of="$FLASH" bs=4M oflag=direct conv=fsync,sparse status=none; check_flash "$1" ;;
  esac
}
VARIANTS=(ferry-install dd-install dd-readback rauc swupdate ferry-flash ferry-flash-noverify bmaptool dd-image)
for r in $(seq "$ROUNDS"); do
  say "round $r/$ROUNDS"
  for v in $(printf '%s\n' "${VARIANTS[@]}" | shuf --random-source=<(yes "$r$r$r$r$r$r$r$r")); do
    variant "$v"
    printf '   %-22s %6.2f s\n' "$v" "$(tail -n1 "$WORK/res/$v.ms" | awk '{print $1/1000}')" >&2
  done
done

# ------------------------------------------------------------------ the table
med() { sort -g "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
s() { awk -v ms="$(med "$WORK/res/$1.ms")" 'BEGIN {printf "%.2f", ms/1000}'; }
ratio() { awk -v a="$(med "$WORK/res/$1.ms")" -v b="$(med "$WORK/res/$2.ms")" 'BEGIN {printf "%.2f", a/b}'; }
rss() { awk -v k="$(med "$WORK/res/$1.rss")" 'BEGIN {printf "%.1f MiB", k/1024}'; }
runs() { awk '{printf "%s%.2f", (NR>1?" / ":""), $1/1000}' "$WORK/res/$1.ms"; }
verdict() { awk -v v="$1" -v t="$2" 'BEGIN {print (v <= t) ? "met" : "**missed**"}'; }
{
  echo "SD-class target: write $((WBPS >> 20)) MiB/s, read $((RBPS >> 20)) MiB/s (cgroup v1 blkio on losetup --direct-io=on);"
  echo "rootfs $((IMG_BYTES >> 20)) MiB ext4, $((MAPPED >> 20)) MiB mapped; medians of $ROUNDS interleaved rounds; $(date -u +%F), commit $(git -C "$REPO" rev-parse --short HEAD)"
  echo
  echo "| command | seconds (runs) | ratio | peak RSS | target |"
  echo "|---|---|---|---|---|"
  echo "| ferry install → rootfs_b (+ 256 KiB kernel and k3s payloads; verify, zstd, write, read back every byte) | $(s ferry-install) ($(runs ferry-install)) | | $(rss ferry-install) | |"
  echo "| dd oflag=direct conv=fsync, the same bytes → rootfs_b | $(s dd-install) ($(runs dd-install)) | ferry / dd **$(ratio ferry-install dd-install)** | | ≤ 1.01: $(verdict "$(ratio ferry-install dd-install)" 1.01) |"
  echo "| dd, then dd iflag=direct read-back \| sha256sum | $(s dd-readback) ($(runs dd-readback)) | ferry / this $(ratio ferry-install dd-readback) | | (context) |"
  echo "| RAUC 1.8 install, plain bundle, squashfs zstd -9 1 MiB, raw slot = rootfs_b | $(s rauc) ($(runs rauc)) | ferry / RAUC **$(ratio ferry-install rauc)** | client $(rss rauc); service VmHWM $(awk -v k="$(med "$WORK/res/rauc.hwm")" 'BEGIN {printf "%.1f MiB", k/1024}') | ≤ 0.95: $(verdict "$(ratio ferry-install rauc)" 0.95) |"
  echo "| SWUpdate $(dpkg-query -W -f="\${Version}" swupdate 2>/dev/null), zstd, installed-directly → rootfs_b | $(s swupdate) ($(runs swupdate)) | ferry / SWUpdate **$(ratio ferry-install swupdate)** | $(rss swupdate) | ≤ 0.95: $(verdict "$(ratio ferry-install swupdate)" 0.95) |"
  echo "| ferry flash (read-back on) | $(s ferry-flash) ($(runs ferry-flash)) | | $(rss ferry-flash) | |"
  echo "| bmaptool copy --bmap | $(s bmaptool) ($(runs bmaptool)) | ferry flash / bmaptool **$(ratio ferry-flash bmaptool)** | $(rss bmaptool) | ≤ 1.0: $(verdict "$(ratio ferry-flash bmaptool)" 1.0) |"
  echo "| ferry flash --no-verify | $(s ferry-flash-noverify) ($(runs ferry-flash-noverify)) | / bmaptool $(ratio ferry-flash-noverify bmaptool) | $(rss ferry-flash-noverify) | (context) |"
  echo "| dd oflag=direct conv=fsync,sparse, the image | $(s dd-image) ($(runs dd-image)) | ferry flash / dd $(ratio ferry-flash dd-image) | | (context) |"
} | tee "$WORK/sd-class.md"
