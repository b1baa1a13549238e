#!/usr/bin/env bash
# mkinitrd.sh OUT_DIR [--panic]
# Builds a gzip'd newc initramfs from OUT_DIR/{busybox,modules/} (see fetch-kernel.sh).
#   default : OUT_DIR/initrd.img       -> loads modules, mounts ferry.root=/dev/vdaN
#             read-only on /newroot, switch_root to /sbin/init (powers off on error)
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
fail() { echo "FERRY-INITRD: ERROR: $*; powering off"; sleep 1; poweroff -f; }
while read -r m; do
  insmod "/lib/modules/$m" || echo "FERRY-INITRD: insmod $m failed"
done < /lib/modules/load-order
root=
for arg in $(cat /proc/cmdline); do
  case $arg in ferry.root=*) root=${arg#ferry.root=} ;; esac
done
[ -n "$root" ] || fail "no ferry.root= on the kernel command line"
i=0  # virtio probing is asynchronous: wait up to 5 s for the device node
while [ ! -b "$root" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 -o ro "$root" /newroot || fail "cannot mount $root (ext4, ro)"
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
