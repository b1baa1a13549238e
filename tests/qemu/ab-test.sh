#!/usr/bin/env bash
# ab-test.sh [WORK_DIR]   (default /root/.cache/ferry/qemu)
# End-to-end proof of the QEMU board + board/qemu-aarch64-virt/boot.cmd, by booting:
#   1 plain        uboot.env BOOT_ORDER=A                      -> slot a
#   2 fallback     kernel_b panics; BOOT_ORDER="B A" FERRY_TRIAL=B BOOT_B_LEFT=2
#                  -> B panics twice (panic=3 reboots via U-Boot), then a; BOOT_B_LEFT=0
#   3 committed    BOOT_ORDER="B A", no trial, BOOT_B_LEFT=0   -> b, uboot.env untouched
#   4 good trial   BOOT_ORDER="B A" FERRY_TRIAL=B BOOT_B_LEFT=3 -> b, BOOT_B_LEFT=2
#   5 exhausted    BOOT_ORDER=B FERRY_TRIAL=B BOOT_B_LEFT=0   -> U-Boot powers off
#   6 bad CRC      -> defaults (BOOT_ORDER=A)                  -> a
#   7 no uboot.env -> defaults                                 -> a
set -euo pipefail

HERE=$(dirname "$(realpath "$0")")
W=${1:-/root/.cache/ferry/qemu}
K=$W/kernel
mkdir -p "$W"
"$HERE/../../board/appliance/fetch-kernel.sh" /root/.cache/ferry/debs "$K"
"$HERE/../../board/appliance/mkinitrd.sh" "$K"
"$HERE/../../board/appliance/mkinitrd.sh" "$K" --panic
"$HERE/mkdisk-proto.sh" "$K" "$W/good.img"
"$HERE/mkdisk-proto.sh" "$K" "$W/badb.img" "$K/initrd-panic.img"

off() { sgdisk -i 1 "$1" | awk '/^First sector:/ {print $3 * 512}'; }
get_env() { mcopy -o -i "$1@@$(off "$1")" ::/uboot.env "$W/uboot.env"; }
put_env() { mcopy -o -i "$1@@$(off "$1")" "$W/uboot.env" ::/uboot.env; }
echo "$W/uboot.env 0x0 0x40000" > "$W/fw_env.config"
set_env() { # set_env DISK 'NAME=value' ... (libubootenv 0.3.2 -s wants name=value;
  get_env "$1"; shift                      # "name value" lines are silently ignored)
  printf '%s\n' "$@" > "$W/env.script"
  fw_setenv -c "$W/fw_env.config" -s "$W/env.script"
}
expect() { # expect LOG COUNT PATTERN
  local n; n=$(grep -c -- "$3" "$1" || true)
  [[ $n -eq $2 ]] || { echo "FAIL: '$3' seen $n times in $1, expected $2" >&2; exit 1; }
}
run() { # run NAME DISK: fresh copy of DISK, QEMU, log in $W/NAME.log
  cp --sparse=always "$2" "$W/$1.img"
  put_env "$W/$1.img"
  SECONDS=0
  "$HERE/run-qemu.sh" "$W/$1.img" "$W/$1.log" >/dev/null
  echo "== $1: QEMU wall time ${SECONDS}s"
}
final_env() { get_env "$W/$1.img"; fw_printenv -c "$W/fw_env.config" | tr '\n' ' '; echo; }

get_env "$W/good.img"; run plain "$W/good.img"
expect "$W/plain.log" 1 "FERRY-TEST: booted slot=a"

set_env "$W/badb.img" "BOOT_ORDER=B A" FERRY_TRIAL=B BOOT_B_LEFT=2; run fallback "$W/badb.img"
expect "$W/fallback.log" 2 "Attempted to kill init"
expect "$W/fallback.log" 1 "ferry: trial slot B: 1 tries left after this one"
expect "$W/fallback.log" 1 "ferry: trial slot B: 0 tries left after this one"
expect "$W/fallback.log" 1 "ferry: trial slot B: no tries left, skipping"
expect "$W/fallback.log" 1 "FERRY-TEST: booted slot=a"
final_env fallback | tee /dev/stderr | grep -q 'BOOT_B_LEFT=0 ' || { echo "FAIL: BOOT_B_LEFT" >&2; exit 1; }

set_env "$W/good.img" "BOOT_ORDER=B A" BOOT_B_LEFT=0; cp "$W/uboot.env" "$W/committed.env"
run committed "$W/good.img"
expect "$W/committed.log" 1 "FERRY-TEST: booted slot=b"
get_env "$W/committed.img"; cmp "$W/uboot.env" "$W/committed.env" || { echo "FAIL: env written" >&2; exit 1; }

set_env "$W/good.img" "BOOT_ORDER=B A" FERRY_TRIAL=B BOOT_B_LEFT=3; run trial "$W/good.img"
expect "$W/trial.log" 1 "FERRY-TEST: booted slot=b"
final_env trial | tee /dev/stderr | grep -q 'BOOT_B_LEFT=2 ' || { echo "FAIL: BOOT_B_LEFT" >&2; exit 1; }

set_env "$W/good.img" BOOT_ORDER=B FERRY_TRIAL=B BOOT_B_LEFT=0; run exhausted "$W/good.img"
expect "$W/exhausted.log" 1 "ferry: FATAL: no bootable slot"
expect "$W/exhausted.log" 0 "Starting kernel"

set_env "$W/good.img" "BOOT_ORDER=B A"  # valid file for slot b ...
printf 'X' | dd of="$W/uboot.env" bs=1 seek=100 conv=notrunc status=none  # ... but bad CRC
run badcrc "$W/good.img"
expect "$W/badcrc.log" 1 "ferry: uboot.env and uboot.env.redund missing or bad"
expect "$W/badcrc.log" 1 "FERRY-TEST: booted slot=a"

cp --sparse=always "$W/good.img" "$W/noenv.img"
mdel -i "$W/noenv.img@@$(off "$W/noenv.img")" ::/uboot.env
SECONDS=0; "$HERE/run-qemu.sh" "$W/noenv.img" "$W/noenv.log" >/dev/null
echo "== noenv: QEMU wall time ${SECONDS}s"
expect "$W/noenv.log" 1 "ferry: uboot.env and uboot.env.redund missing or bad"
expect "$W/noenv.log" 1 "FERRY-TEST: booted slot=a"
echo PASS
