#!/usr/bin/env bash
# mkinitrd.sh OUT_DIR [--panic]
# Builds a gzip'd newc initramfs from OUT_DIR/{busybox,modules/} (see fetch-kernel.sh).
#   default : OUT_DIR/initrd.img       -> loads modules, mounts ferry.root=/dev/vdaN or
#             ferry.root=PARTLABEL=NAME (a GPT partition name: a Pi's card may be
#             mmcblk0 or mmcblk1) read-only on /newroot, links /dev/ferry/disk and
#             /dev/ferry/<partition name> for that disk, switch_root to /sbin/init
#             (reboots on error, so a trial slot's boot counter runs down)
#   --panic : OUT_DIR/initrd-panic.img -> /init exits at once, so the kernel panics
#             ("Attempted to kill init") and, with panic=N, reboots: a "bad kernel".
set -euo pipefail

[[ $# -ge 1 && $# -le 2 ]] || { echo "usage: $0 OUT_DIR [--panic]" >&2; exit 2; }
OUT=$(realpath "$1")
MODE=${2:-}
[[ -z $MODE || $MODE == --panic ]] || { echo "unknown option: $MODE" >&2; exit 2; }
[[ -x $OUT/busybox && -f $OUT/modules/load-order ]] || { echo "run fetch-kernel.sh first" >&2; exit 1; }

T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$OUT/busybox" "$T/bin/busybox"
ln -s busybox "$T/bin/sh"
mknod -m 600 "$T/dev/console" c 5 1  # the kernel opens it before /init runs

if [[ $MODE == --panic ]]; then
  IMG=$OUT/initrd-panic.img
  cat > "$T/init" <<'INIT'
#!/bin/sh
echo "FERRY-INITRD: deliberately broken initrd (--panic): /init exits now"
exit 1
INIT
else
  IMG=$OUT/initrd.img
  cp "$OUT"/modules/*.ko "$OUT/modules/load-order" "$T/lib/modules/"
  cat > "$T/init" <<'INIT'
#!/bin/sh
# ferry test initramfs: load modules, mount ferry.root read-only, switch_root.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# a reboot, not a power-off: on a trial boot the bootloader's counter then
# falls back to the good slot; a board that powers off stays off
fail() { echo "FERRY-INITRD: ERROR: $*; rebooting"; sleep 3; reboot -f; }
while read -r m; do
  insmod "/lib/modules/$m" || echo "FERRY-INITRD: insmod $m failed"
done < /lib/modules/load-order
root=
for arg in $(cat /proc/cmdline); do
  case $arg in ferry.root=*) root=${arg#ferry.root=} ;; esac
done
[ -n "$root" ] || fail "no ferry.root= on the kernel command line"
# resolve NAME: /dev/X, or the one partition whose GPT name is NAME's PARTLABEL
resolve() {
  case $1 in
    PARTLABEL=*)
      found=
      for u in /sys/class/block/*/uevent; do
        grep -qx "PARTNAME=${1#PARTLABEL=}" "$u" || continue
        d=${u%/uevent}
        [ -z "$found" ] || { echo "FERRY-INITRD: two disks have partition ${1#PARTLABEL=}: $found and /dev/${d##*/}" >&2; return 2; }
        found=/dev/${d##*/}
      done
      [ -n "$found" ] && echo "$found" ;;
    *) echo "$1" ;;
  esac
}
i=0  # device probing is asynchronous (virtio, an SD card): wait up to 10 s
dev=
while [ $i -lt 100 ]; do
  dev=$(resolve "$root"); rc=$?
  [ $rc -eq 2 ] && fail "ambiguous root $root: remove the other disk"
  [ -n "$dev" ] && [ -b "$dev" ] && break
  sleep 0.1; i=$((i + 1))
done
[ -n "$dev" ] && [ -b "$dev" ] || fail "no device for root $root"
mount -t ext4 -o ro "$dev" /newroot || fail "cannot mount $dev (ext4, ro)"
# stable names for the rest of the boot: the disk and its partitions by GPT name
p=${dev#/dev/}
if [ -e "/sys/class/block/$p/partition" ]; then
  disk=$(basename "$(readlink -f "/sys/class/block/$p/..")")
  mkdir -p /dev/ferry
  ln -sf "/dev/$disk" /dev/ferry/disk
  for u in /sys/class/block/$disk/$disk*/uevent; do
    n=$(sed -n 's/^PARTNAME=//p' "$u")
    d=${u%/uevent}
    [ -n "$n" ] && ln -sf "/dev/${d##*/}" "/dev/ferry/$n"
  done
fi
root=$dev
[ -x /newroot/sbin/init ] || fail "$root has no /sbin/init"
echo "FERRY-INITRD: switching to $root"
umount /proc /sys
if [ -d /newroot/dev ]; then mount --move /dev /newroot/dev; else umount /dev; fi
exec switch_root /newroot /sbin/init
INIT
fi
chmod 0755 "$T/init"
find "$T" -exec touch -h -d @0 {} +  # reproducible: fixed mtimes, sorted, no gzip name
(cd "$T" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet | gzip -9n) > "$IMG.tmp"
mv "$IMG.tmp" "$IMG"
echo "wrote $IMG ($(stat -c %s "$IMG") bytes)"
