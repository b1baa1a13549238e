#!/usr/bin/env bash
# build.sh --k3s FILE --key SIGNING.key --version V --out DIR [options]
#
# ferry's reference appliance in one command: from Debian 12 arm64 packages (the cloud kernel,
# busybox, OpenRC; resolved by apt, never a hard-coded ABI), the k3s binary you give, and
# ferry itself, it builds
#   DIR/kernel.ext4   /Image + /initrd.img (Debian's linux-image-cloud-arm64, a busybox initramfs)
#   DIR/rootfs.ext4   the read-only root filesystem (build-rootfs.sh)
#   DIR/k3s.ext4      /k3s
#   DIR/BOARD-V.ferry the signed bundle of the three (for `ferry install` / a feed)
#   DIR/BOARD-V.img   a bootable disk image with it in slot A (`ferry flash` writes it)
# Options:
#   --board NAME        qemu-aarch64-virt (default: Debian's cloud kernel) or raspberry-pi-4
#                       (Debian's arm64 kernel, its Pi device trees in the kernel slot;
#                       raspi-firmware from non-free-firmware and u-boot-rpi on the boot
#                       partition of the image: the firmware loads U-Boot, U-Boot runs
#                       ferry's boot.scr; the image also boots a Pi 3 and QEMU's raspi3b)
#   --ferry BIN         the aarch64 ferry for the device (default: cargo build --release
#                       --no-default-features --target aarch64-unknown-linux-musl)
#   --host-ferry BIN    ferry for this machine, to sign and build the image (default: cargo build --release)
#   --config FILE       the device's /etc/ferry/ferry.toml (default: board/appliance/ferry.toml)
#   --trust PUB         a key the device trusts (default: the public half of --key); repeatable
#   --initrd FILE       use this initramfs instead of building one
#   --kernel-modules "M ..."  more modules for the initramfs to load (and their dependencies):
#                       a USB Ethernet adapter's driver, say
#   --overlay DIR, --disable SVC, --net "..."   passed to build-rootfs.sh
#   --rootfs-mib N      size of the rootfs ext4 (default 48; the slot is 96 MiB)
#   --no-image          the bundle only
# Env: DEB_CACHE (default ~/.cache/ferry/debs), SOURCE_DATE_EPOCH (default 1704067200).
set -euo pipefail

HERE=$(dirname "$(realpath "$0")")
ROOT=$(realpath "$HERE/../..")
BOARD=qemu-aarch64-virt K3S= KEY= VERSION= OUT= FERRY= HOSTF= CONFIG= INITRD= ROOTFS_MIB=48 IMAGE=1
TRUST=() PASS=() XMODS=
while [[ $# -gt 0 ]]; do
  case $1 in
    --board) BOARD=$2; shift 2 ;;
    --k3s) K3S=$2; shift 2 ;;
    --key) KEY=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --ferry) FERRY=$2; shift 2 ;;
    --host-ferry) HOSTF=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --trust) TRUST+=("$2"); shift 2 ;;
    --initrd) INITRD=$2; shift 2 ;;
    --kernel-modules) XMODS=$2; shift 2 ;;
    --overlay|--disable|--net) PASS+=("$1" "$2"); shift 2 ;;
    --rootfs-mib) ROOTFS_MIB=$2; shift 2 ;;
    --no-image) IMAGE=0; shift ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
[[ -n $K3S && -n $KEY && -n $VERSION && -n $OUT ]] ||
  { echo "usage: $0 --k3s FILE --key SIGNING.key --version V --out DIR [options] (try --help)" >&2; exit 2; }
[[ -f $K3S ]] || { echo "--k3s $K3S: no such file" >&2; exit 2; }
[[ -f $KEY ]] || { echo "--key $KEY: no such file" >&2; exit 2; }
PI_DTBS="broadcom/bcm2711-rpi-4-b.dtb broadcom/bcm2711-rpi-400.dtb broadcom/bcm2711-rpi-cm4-io.dtb
  broadcom/bcm2837-rpi-3-b.dtb broadcom/bcm2837-rpi-3-b-plus.dtb"
case $BOARD in
  qemu-aarch64-virt)
    SLOTS="/dev/vda4 /dev/vda7" DISK=/dev/vda DATA=/dev/vda8 CONSOLE=ttyAMA0 KARGS=() KERNEL_MIB=40 ;;
  raspberry-pi-4)
    # the initramfs links /dev/ferry/* by GPT partition name (mmcblk0 or mmcblk1)
    SLOTS="/dev/ferry/k3s_a /dev/ferry/k3s_b" DISK=/dev/ferry/disk DATA=/dev/ferry/data CONSOLE=ttyS1 KERNEL_MIB=64
    # SD card (sdhci-iproc: Pi 4's emmc2 and Pi 3's sdhci; bcm2835: Pi 3's sdhost) and its
    # regulators, ext4 and vfat, the watchdog (the restart handler), the RNGs, Ethernet
    # (Pi 4: genet; Pi 3: smsc95xx on dwc2; USB CDC Ethernet adapters, as QEMU's usb-net)
    KARGS=(--flavour "" --dtbs "$PI_DTBS" --modules "fixed gpio_regulator sdhci_iproc bcm2835
      crc32c_generic ext4 vfat nls_cp437 nls_ascii nls_iso8859_1 bcm2835_wdt bcm2835_rng iproc_rng200
      genet mdio_bcm_unimac broadcom dwc2 smsc95xx cdc_ether") ;;
  *) echo "--board $BOARD: qemu-aarch64-virt or raspberry-pi-4" >&2; exit 2 ;;
esac
[[ -z $XMODS ]] || KARGS+=(--extra-modules "$XMODS")
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1704067200}
export DEB_CACHE=${DEB_CACHE:-$HOME/.cache/ferry/debs}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
step() { printf '== %s\n' "$*" >&2; }

if [[ -z $FERRY || -z $HOSTF ]]; then
  TGT=${CARGO_TARGET_DIR:-$ROOT/target}
  if [[ -z $FERRY ]]; then
    step "ferry for the device (aarch64 musl)"
    (cd "$ROOT" && cargo build -q --release --no-default-features --target aarch64-unknown-linux-musl)
    FERRY=$TGT/aarch64-unknown-linux-musl/release/ferry
  fi
  if [[ -z $HOSTF ]]; then
    step "ferry for this machine"
    (cd "$ROOT" && cargo build -q --release)
    HOSTF=$TGT/release/ferry
  fi
fi
[[ ${#TRUST[@]} -gt 0 ]] || TRUST=("${KEY%.key}.pub")

# a reproducible ext4 of a directory (fixed UUID, hash seed and time)
mkext4() { # mkext4 IMG MIB LABEL DIR
  local uuid
  uuid=$(printf '%s' "$3" | sha256sum | sed -E 's/^(.{8})(.{4}).(.{3}).(.{3})(.{12}).*/\1-\2-4\3-8\4-\5/')
  rm -f "$1"
  E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mke2fs -q -F -t ext4 -L "$3" -U "$uuid" \
    -E root_owner=0:0,hash_seed="$uuid" -d "$4" "$1" "$2M"
}
W=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$W"' EXIT

step "kernel: Debian's arm64 kernel and a busybox initramfs"
K=$OUT/kernel
"$HERE/fetch-kernel.sh" "$DEB_CACHE" "$K" "${KARGS[@]}" >&2
mkdir -p "$W/kernel"
cp "$K/Image" "$W/kernel/Image"
[[ ! -d $K/dtbs ]] || cp -r "$K/dtbs" "$W/kernel/dtbs"
if [[ -n $INITRD ]]; then cp "$INITRD" "$W/kernel/initrd.img"; else
  "$HERE/mkinitrd.sh" "$K" >&2; cp "$K/initrd.img" "$W/kernel/initrd.img"; fi
mkext4 "$OUT/kernel.ext4" "$KERNEL_MIB" kernel "$W/kernel"

step "rootfs: busybox + OpenRC from Debian packages, ferry $VERSION"
args=(--ferry "$FERRY" --slots "$SLOTS" --board "$BOARD" --disk "$DISK" --data "$DATA" --console "$CONSOLE" --release "$VERSION" "${PASS[@]}")
[[ -z $CONFIG ]] || args+=(--config "$CONFIG")
for t in "${TRUST[@]}"; do args+=(--key "$t"); done
"$HERE/build-rootfs.sh" "$W/rootfs" "${args[@]}" > "$OUT/packages.txt"
mkext4 "$OUT/rootfs.ext4" "$ROOTFS_MIB" rootfs "$W/rootfs"

step "k3s: $K3S"
mkdir -p "$W/k3s"
install -m 0755 "$K3S" "$W/k3s/k3s"
mkext4 "$OUT/k3s.ext4" $(( $(stat -c %s "$K3S") / 1048576 + 2 )) k3s "$W/k3s"

B=$OUT/$BOARD-$VERSION.ferry
step "bundle $B"
"$HOSTF" -q bundle create --board "$BOARD" --version "$VERSION" --kernel "$OUT/kernel.ext4" \
  --rootfs "$OUT/rootfs.ext4" --k3s "$OUT/k3s.ext4" --key "$KEY" -o "$B"
if [[ $IMAGE == 1 ]]; then
  step "disk image $OUT/$BOARD-$VERSION.img"
  keys=()
  for t in "${TRUST[@]}"; do keys+=(--key "$t"); done
  bootf=()
  if [[ $BOARD == raspberry-pi-4 ]]; then
    step "boot partition: raspi-firmware (non-free-firmware), u-boot-rpi, device trees"
    "$HERE/fetch-pi-boot.sh" "$DEB_CACHE" "$W/pi-boot" >&2
    for f in "$W"/pi-boot/*; do bootf+=(--boot-file "$f"); done
    # the firmware's own device tree (U-Boot's control tree; Linux gets the slot's)
    for d in $PI_DTBS; do bootf+=(--boot-file "$K/dtbs/$d"); done
  fi
  "$HOSTF" -q image build --board "$BOARD" --bundle "$B" "${keys[@]}" "${bootf[@]}" -o "$OUT/$BOARD-$VERSION.img"
fi
echo "built: $B" >&2
[[ $IMAGE == 0 ]] || echo "built: $OUT/$BOARD-$VERSION.img" >&2
