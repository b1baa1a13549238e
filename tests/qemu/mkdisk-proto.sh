#!/usr/bin/env bash
# mkdisk-proto.sh KERNEL_DIR DISK [KERNEL_B_INITRD]
# PROTOTYPE (to be replaced by `ferry image build`): builds a sparse GPT disk image
#   1 boot (FAT, 32M: boot.scr + uboot.env)  2 kernel_a (ext4 64M: /Image /initrd.img)
#   3 rootfs_a (ext4 128M)  4 k3s_a (ext4 16M)  5 kernel_b  6 rootfs_b  7 k3s_b  8 data (ext4 64M)
# KERNEL_DIR is fetch-kernel.sh's OUT_DIR after mkinitrd.sh. Slot B gets the same
# kernel and a copy of rootfs_a; its initrd is KERNEL_B_INITRD (default: slot A's).
# The test rootfs' /sbin/init prints "FERRY-TEST: booted slot=<ferry.slot>" and powers off.
set -euo pipefail

[[ $# -ge 2 && $# -le 3 ]] || { echo "usage: $0 KERNEL_DIR DISK [KERNEL_B_INITRD]" >&2; exit 2; }
KDIR=$(realpath "$1")
DISK=$2
B_INITRD=$(realpath "${3:-$KDIR/initrd.img}")
BOOTCMD=$(dirname "$(realpath "$0")")/../../board/qemu-aarch64-virt/boot.cmd
NAMES=(boot kernel_a rootfs_a k3s_a kernel_b rootfs_b k3s_b data)
SIZES=(32 64 128 16 64 128 16 64)  # MiB
TYPES=(0700 8300 8300 8300 8300 8300 8300 8300)

W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

# Partition table (1 MiB aligned; +1 MiB at the end for the backup GPT).
total=2
args=(-o)
for i in "${!NAMES[@]}"; do
  total=$((total + SIZES[i]))
  args+=(-n "$((i + 1)):0:+${SIZES[i]}M" -t "$((i + 1)):${TYPES[i]}" -c "$((i + 1)):${NAMES[i]}")
done
rm -f "$DISK"
truncate -s "${total}M" "$DISK"
sgdisk "${args[@]}" -A 1:set:2 "$DISK" >/dev/null  # 1: LegacyBIOSBootable for distro boot
offset() { echo $(($(sgdisk -i "$1" "$DISK" | awk '/^First sector:/ {print $3}') * 512)); }
place() { dd if="$2" of="$DISK" bs=1M seek="$(($(offset "$1") / 1048576))" conv=notrunc,sparse status=none; }
ext4() { # ext4 LABEL IMG DIR|"" PARTNO
  rm -f "$2"; truncate -s "${SIZES[$4 - 1]}M" "$2"
  mke2fs -q -F -t ext4 -L "$1" ${3:+-d "$3"} "$2"
}

# 1 boot: FAT with boot.scr and an initial uboot.env (BOOT_ORDER=A, no trial).
mkimage -A arm64 -T script -C none -n "ferry boot" -d "$BOOTCMD" "$W/boot.scr" >/dev/null
printf 'BOOT_ORDER=A\nBOOT_A_LEFT=0\nBOOT_B_LEFT=0\n' > "$W/env.txt"
mkenvimage -s 0x40000 -o "$W/uboot.env" "$W/env.txt"
mkfs.vfat -n BOOT -C "$W/boot.img" $((SIZES[0] * 1024)) >/dev/null
place 1 "$W/boot.img"
mcopy -o -i "$DISK@@$(offset 1)" "$W/boot.scr" "$W/uboot.env" ::/

# 2/5 kernel_a/b: Image + initrd.img.
mkdir -p "$W/ka" "$W/kb"
cp "$KDIR/Image" "$KDIR/initrd.img" "$W/ka/"
cp "$KDIR/Image" "$W/kb/"
cp "$B_INITRD" "$W/kb/initrd.img"
ext4 kernel_a "$W/kernel_a.img" "$W/ka" 2 && place 2 "$W/kernel_a.img"
ext4 kernel_b "$W/kernel_b.img" "$W/kb" 5 && place 5 "$W/kernel_b.img"

# 3/6 rootfs_a/b: tiny busybox rootfs (rootfs_b is a copy).
R=$W/rootfs
mkdir -p "$R"/{bin,sbin,dev,proc,sys,tmp}
cp "$KDIR/busybox" "$R/bin/busybox"
ln -s busybox "$R/bin/sh"
cat > "$R/sbin/init" <<'INIT'
#!/bin/sh
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
slot=unknown
for arg in $($bb cat /proc/cmdline); do
  case $arg in ferry.slot=*) slot=${arg#ferry.slot=} ;; esac
done
echo "FERRY-TEST: netdevs: $($bb ls /sys/class/net | $bb tr '\n' ' ')modules: $($bb cut -d' ' -f1 /proc/modules | $bb tr '\n' ' ')"
echo "FERRY-TEST: booted slot=$slot uptime=$($bb cut -d' ' -f1 /proc/uptime)"
$bb poweroff -f
INIT
chmod 0755 "$R/sbin/init"
ext4 rootfs_a "$W/rootfs.img" "$R" 3
place 3 "$W/rootfs.img"
e2label "$W/rootfs.img" rootfs_b && place 6 "$W/rootfs.img"

# 4/7/8 k3s_a/b, data: empty ext4.
ext4 k3s_a "$W/k3s.img" "" 4 && place 4 "$W/k3s.img"
e2label "$W/k3s.img" k3s_b && place 7 "$W/k3s.img"
ext4 data "$W/data.img" "" 8 && place 8 "$W/data.img"

echo "wrote $DISK (${total} MiB, sparse; boot partition at byte $(offset 1))"
