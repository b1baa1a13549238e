#!/usr/bin/env bash
# run-qemu.sh DISK LOG [extra qemu args...]
# Boots DISK on QEMU's arm64 `virt` board with Debian's U-Boot as firmware.
# The serial console goes to stdout and to LOG. QEMU ends when the guest powers
# off (guest reboots go back through U-Boot in the same process) or after
# $QEMU_TIMEOUT seconds (default 300; exit status 124 then). Env: UBOOT, UBOOT_NODELAY,
# EXTRA_DISK, QEMU_EXEC (see below).
# Extra args are appended, e.g. `-no-reboot` (don't use it for fallback tests).
# QEMU_EXEC=1: exec QEMU directly instead (no timeout, no tee, stdin inherited, LOG
# unused), so that a console driver (console.py) talks to it and can SIGKILL it.
set -euo pipefail

[[ $# -ge 2 ]] || { echo "usage: $0 DISK LOG [qemu args...]" >&2; exit 2; }
DISK=$1 LOG=$2
shift 2
UBOOT=${UBOOT:-/usr/lib/u-boot/qemu_arm64/u-boot.bin}
# UBOOT_NODELAY=1: use a copy of U-Boot whose built-in default env says bootdelay=0
# (saves 2 s per boot; the env cannot be saved on this board, so patch the binary).
if [[ ${UBOOT_NODELAY:-0} == 1 ]]; then
  fast=/root/.cache/ferry/qemu/u-boot-nodelay.bin
  if [[ ! -f $fast ]]; then
    mkdir -p "${fast%/*}"
    perl -pe 's/bootdelay=2\0/bootdelay=0\0/' "$UBOOT" > "$fast.tmp" && mv "$fast.tmp" "$fast"
  fi
  UBOOT=$fast
fi

# EXTRA_DISK=FILE: a second, read-only virtio disk (/dev/vdb in Linux, e.g. a bundle).
# virtio-mmio devices are enumerated in REVERSE order of their -device options (by
# U-Boot as `virtio N` and by Linux as vdX), so it goes first and DISK stays
# `virtio 0` and /dev/vda.
extra=()
if [[ -n ${EXTRA_DISK:-} ]]; then
  extra=(-drive "if=none,file=$EXTRA_DISK,format=raw,id=hd1,readonly=on" -device virtio-blk-device,drive=hd1)
fi
QEMU=(qemu-system-aarch64
  -M virt -cpu cortex-a53 -m 512 -smp 1 -nographic
  -bios "$UBOOT"
  "${extra[@]}"
  -drive "if=none,file=$DISK,format=raw,id=hd0"
  -device virtio-blk-device,drive=hd0
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile=)
[[ ${QEMU_EXEC:-0} == 1 ]] && exec "${QEMU[@]}" "$@"

# romfile= : no iPXE option ROM for the NIC (ipxe-qemu is not installed).
# stdin is /dev/null: nothing is typed into U-Boot, so it autoboots.
set +e
timeout "${QEMU_TIMEOUT:-300}" "${QEMU[@]}" "$@" </dev/null 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
[[ $rc -eq 124 ]] && echo "run-qemu.sh: timed out after ${QEMU_TIMEOUT:-300}s" >&2
exit "$rc"
