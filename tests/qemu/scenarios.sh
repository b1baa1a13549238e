#!/usr/bin/env bash
# scenarios.sh [--only N[,N...]] [--work DIR] [--keep-logs]
# End-to-end update scenarios of ferry on the QEMU arm64 board (U-Boot + boot.cmd), on the
# reference appliance built by board/appliance/build.sh (Debian's kernel, busybox + OpenRC
# from Debian packages, ferry's OpenRC services), driven through the serial console (console.py).
# The test adds, through build.sh's --overlay: a test ferry.toml, an OpenRC service that
# prints the FERRY-TEST lines, and a console prompt; the daemon service is left out of the
# default runlevel (scenario 7 runs it by hand):
#   1 first boot      slot A on a card 64 MiB bigger than the image: the data partition and its
#                     ext4 grow (once: a second boot does nothing), firstboot applies node.toml,
#                     `ferry check` does nothing, status: a good 1.0.0, idle
#   2 update          `ferry install /dev/vdb` (v1.1.0 on a 2nd virtio disk), reboot into
#                     B, health passes, commit; one more reboot stays on B
#   3 bad k3s         v1.2.0: health never passes, `ferry check` marks B bad, reboots to A
#   4 kernel panic    v1.3.0: B panics 3 times, U-Boot's counter falls back to A
#   5 power cut       QEMU SIGKILLed while v1.1.0's rootfs is written; reboot: A, the
#                     install is resumable/interrupted; install again, B, commit
#   6 torn env        after a commit to B, one byte of uboot.env is damaged: U-Boot uses
#                     uboot.env.redund and boots B again
#   7 network feed    the guest's daemon fetches v1.1.0 from a feed on the host
#   8 rollback window v1.4.0 (bad k3s, reboot = "record"): the trial is rolled back but the
#                     reboot has not happened; install and rollback are refused (rc 54);
#                     the reboot then goes to A
#   9 arming window   a cut right after the env armed B (record still "installing"), then
#                     an install of another release over HTTP cut mid-write: U-Boot boots A
#  10 pi board        the raspberry-pi-4 image (Debian's arm64 kernel, the Pi device trees,
#                     raspi-firmware + Debian's u-boot-rpi on partition 1) on QEMU's raspi3b
#                     (the same U-Boot binary serves the Pi 3 and 4; QEMU has no Pi 4 and
#                     no GPU firmware, so it starts U-Boot itself): U-Boot runs ferry's
#                     boot.scr, the initramfs finds rootfs_a by its GPT name on the SD card,
#                     the data partition grows; `ferry install` of 1.1.0 from /data, the
#                     reboot goes through U-Boot's trial counter into B, health, commit
# Builds everything it needs (both ferry binaries, kernel, initrds, ext4 payloads, a dev
# key, bundles v1.0.0..v1.3.0, the base disk) into WORK (default
# /root/.cache/ferry/scenarios). Prints each scenario's duration and PASS/FAIL and exits
# 1 if any failed; the console log of a failed scenario is copied to
# target/qemu-logs/ (all logs are also in WORK/logs/). UBOOT_NODELAY defaults to 1.
set -euo pipefail

HERE=$(dirname "$(realpath "$0")")
ROOT=$(realpath "$HERE/../..")
W=/root/.cache/ferry/scenarios
ONLY=
KEEP=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --only) ONLY=${2:?--only needs N}; shift 2 ;;
    --work) W=${2:?--work needs DIR}; shift 2 ;;
    --keep-logs) KEEP=1; shift ;;  # copy every scenario's log to target/qemu-logs/
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
[[ -z $ONLY || $ONLY =~ ^([1-9]|10)(,([1-9]|10))*$ ]] || { echo "--only: expected N[,N...] with N in 1..10" >&2; exit 2; }
mkdir -p "$W"
W=$(realpath "$W")
LOGS=$W/logs
FAILLOGS=$ROOT/target/qemu-logs
export UBOOT_NODELAY=${UBOOT_NODELAY:-1}
BOARD=qemu-aarch64-virt
FEEDPORT=${FEEDPORT:-18731}  # the host's feed server for scenario 7
PROMPT='ferry-test# '
T0=$SECONDS
note() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - T0)); }

# ---------------------------------------------------------------- build
note "build ferry (device: aarch64 musl, host)"
(cd "$ROOT" &&
  cargo build --release --no-default-features --features fault-hooks --target aarch64-unknown-linux-musl &&
  cargo build --release)
TGT=${CARGO_TARGET_DIR:-$ROOT/target}
HOSTF=$TGT/release/ferry
DEVF=$TGT/aarch64-unknown-linux-musl/release/ferry

note "kernel initrds (the good one is build.sh's, the panicking one is the test's)"
K=$W/kernel
APP=$ROOT/board/appliance
"$APP/fetch-kernel.sh" /root/.cache/ferry/debs "$K"
"$APP/mkinitrd.sh" "$K" --panic

note "key, k3s stand-ins, test overlay"
[[ -f $W/dev.key && -f $W/dev.pub ]] || "$HOSTF" key generate dev --dir "$W"
B=$W/build
rm -rf "$B"
mkdir -p "$B" "$LOGS"

mkext4() { # mkext4 IMG SIZE_MIB LABEL DIR
  rm -f "$1"
  mke2fs -q -F -t ext4 -L "$3" -E root_owner=0:0 -d "$4" "$1" "$2M"
}

# k3s stand-ins: `server|agent` becomes ready after 2 s (GOOD) or never (BAD) and stays up
# (OpenRC's supervise-daemon runs it); `health` checks it
for kind in GOOD BAD; do
  d=$B/k3s-$kind
  mkdir -p "$d"
  cat > "$d/k3s" <<EOF
#!/bin/sh
# k3s stand-in for the ferry QEMU scenarios ($kind build)
case \$1 in
  server|agent)
    # record how it was started and with which config, for the test to read
    echo "\$*" > /run/k3s-args
    cp /etc/rancher/k3s/config.yaml /run/k3s-config 2>/dev/null
    echo "k3s stand-in ($kind): starting as \$1"
    if [ $kind = GOOD ]; then sleep 2; touch /run/k3s-ready; echo "k3s stand-in: ready"; fi
    exec sleep 2147483647 ;;
  health) [ -e /run/k3s-ready ] ;;
  *) echo "usage: k3s server|agent|health" >&2; exit 2 ;;
esac
EOF
  chmod 0755 "$d/k3s"
done

# the device config of the test images
cat > "$B/ferry.toml" <<'EOF'
board = "qemu-aarch64-virt"
disk = "/dev/vda"
state_dir = "/data/ferry"
keyring = "/etc/ferry/keys"     # directory of *.pub
[health]
commands = ["/opt/k3s/k3s health"]
deadline_s = 20
interval_s = 1
passes = 2
# scenario 7: the host serves a feed on its loopback, which QEMU's user network
# shows the guest as 10.0.2.2 (plain http, allowed explicitly; TLS is covered
# by the in-process daemon tests)
[feed]
url = "http://10.0.2.2:FEEDPORT/stable/index.json"
channel = "stable"
allow_http = true
poll_interval_s = 60
jitter_s = 0
[daemon]
socket = "/run/ferry.sock"
EOF
sed -i "s/FEEDPORT/$FEEDPORT/" "$B/ferry.toml"
# REBOOT_RECORD: ferry records reboots instead of doing them (the rollback window)
sed 's/^keyring = /reboot = "record"\nkeyring = /' "$B/ferry.toml" > "$B/ferry-record.toml"

# the test overlay: FERRY-TEST lines around the shipped services, and the console prompt
O=$B/overlay
mkdir -p "$O/etc/init.d" "$O/etc/local.d" "$O/etc/runlevels/default"
cat > "$O/etc/profile" <<'EOF'
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root NO_COLOR=1
export PS1='ferry-test# '
EOF
cat > "$O/etc/init.d/ferry-test" <<'EOF'
#!/sbin/openrc-run
# ferry QEMU scenarios: which slot and release booted, and what first boot applied,
# printed after k3s started and before the shipped health gate (ferry-check) runs
description="ferry QEMU test: boot report"
depend() { after k3s; before ferry-check; }
start() {
	echo 4 > /proc/sys/kernel/printk  # keep kernel info messages off the console lines
	local slot= arg
	for arg in $(cat /proc/cmdline); do
		case $arg in ferry.slot=*) slot=${arg#ferry.slot=} ;; esac
	done
	mountinfo -q /data || echo "FERRY-TEST: ERROR: /data is not mounted"
	mountinfo -q /opt/k3s || echo "FERRY-TEST: ERROR: /opt/k3s is not mounted"
	if [ -f /data/provision/node.toml ]; then
		[ -r /etc/ferry/k3s.env ] && . /etc/ferry/k3s.env
		kc=/etc/rancher/k3s/config.yaml
		tok=no; grep -q '^token: "qemu-join-token"$' $kc && tok=yes
		i=0; while [ ! -s /run/k3s-config ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
		echo "FERRY-TEST: k3s started as: $(cat /run/k3s-args 2>/dev/null); its config names node $(sed -n 's/^node-name: //p' /run/k3s-config 2>/dev/null)"
		echo "FERRY-TEST: provisioned hostname=$(hostname) role=$K3S_ROLE mode=$(stat -c %a /data/provision/node.toml) k3s-config=$(stat -c %a $kc) token=$tok"
	fi
	echo "FERRY-TEST: data size=$(df -m /data | awk 'NR == 2 { print $2 }') MiB"
	echo "FERRY-TEST: booted slot=$slot version=$(cat /etc/ferry-release)"
	return 0
}
EOF
chmod 0755 "$O/etc/init.d/ferry-test"
ln -s /etc/init.d/ferry-test "$O/etc/runlevels/default/ferry-test"
# after the default runlevel (local.d runs last): the gate's result and the status
cat > "$O/etc/local.d/test.start" <<'EOF'
#!/bin/sh
export NO_COLOR=1
echo "FERRY-TEST: check rc=$(cat /run/ferry/check.rc 2>/dev/null || echo none)"
st=$(ferry status --json 2>/tmp/status.err | tr -d '\n')
echo "FERRY-TEST: status $st"
[ -s /tmp/status.err ] && { echo "FERRY-TEST: status stderr:"; cat /tmp/status.err; }
exit 0
EOF
chmod 0755 "$O/etc/local.d/test.start"

mkbundle() { # mkbundle VERSION KERNEL K3S [ROOTFS_FILLER_MIB]: board/appliance/build.sh
  local o=$B/v$1 args=()
  mkdir -p "$o/overlay"
  # incompressible filler: makes writing this rootfs slow enough to cut the power meanwhile
  [[ -z ${4:-} ]] || head -c "$4M" /dev/urandom > "$o/overlay/filler"
  [[ $2 == panic ]] && args+=(--initrd "$K/initrd-panic.img")
  [[ $1 == 1.0.0 ]] || args+=(--no-image)
  "$APP/build.sh" --version "$1" --k3s "$B/k3s-$3/k3s" --key "$W/dev.key" --out "$o" \
    --ferry "$DEVF" --host-ferry "$HOSTF" --config "$B/ferry${REBOOT_RECORD:+-record}.toml" \
    --overlay "$O" --overlay "$o/overlay" --disable ferry "${args[@]}" 2>"$o/build.log" ||
    { cat "$o/build.log"; exit 1; }
  cp "$o/$BOARD-$1.ferry" "$W/v$1.ferry"
  # the same bytes as a virtio disk: padded to whole MiB (a block device is longer than the bundle)
  cp "$W/v$1.ferry" "$W/v$1.disk"
  truncate -s $(( ($(stat -c %s "$W/v$1.ferry") + 1048575) / 1048576 ))M "$W/v$1.disk"
}
mkbundle 1.0.0 good GOOD
mkbundle 1.1.0 good GOOD 12
mkbundle 1.2.0 good BAD
mkbundle 1.3.0 panic GOOD
REBOOT_RECORD=1 mkbundle 1.4.0 good BAD
ls -l "$W"/*.ferry
# the appliance image build.sh made, as `ferry flash` would write it
cp --sparse=always "$B/v1.0.0/$BOARD-1.0.0.img" "$W/base.img"
# personalise the base image as a factory would: the guest must read these settings
cat > "$W/node.toml" <<'EOF'
hostname = "edge-qemu-01"
[k3s]
role = "agent"
server_url = "https://10.0.2.2:6443"
token = "qemu-join-token"
labels = ["zone=qemu"]
EOF
"$HOSTF" provision --image "$W/base.img" --config "$W/node.toml" >/dev/null

# ---------------------------------------------------------------- helpers
CUR=  # current scenario name
ERRS=()
err() { echo "  FAIL: $*"; ERRS+=("$*"); }
fresh() { cp --sparse=always "$W/base.img" "$W/$CUR.img"; : > "$LOGS/$CUR.log"; }
# boot TIMEOUT [--bundle VERSION]: one QEMU process on WORK/$CUR.img doing the steps in S
boot() {
  local t=$(( $1 * 8 / 5 )) extra=
  [[ ${2:-} == --bundle ]] && extra=$W/v$3.disk
  printf '\n[scenarios.sh] === QEMU start (%s) ===\n' "$(date +%T)" >> "$LOGS/$CUR.log"
  EXTRA_DISK=$extra QEMU_EXEC=1 python3 "$HERE/console.py" run "$LOGS/$CUR.log" "$t" "${S[@]}" -- \
    "$HERE/run-qemu.sh" "$W/$CUR.img" /dev/null || err "console steps failed (see log)"
  S=()
}
# status INDEX CHECK... : checks the INDEX-th `FERRY-TEST: status` line of the log
status() { python3 "$HERE/console.py" status "$LOGS/$CUR.log" "$@" | sed 's/^/  /' || ERRS+=("status #$1"); }
# seen COUNT REGEX : REGEX (grep -E) must match exactly COUNT lines of the log
seen() {
  local n
  n=$(tr -d '\r' < "$LOGS/$CUR.log" | sed 's/\x1b\[[0-9;]*[a-zA-Z]//g' | grep -cE -- "$2" || true)
  [[ $n -eq $1 ]] || err "/$2/ seen $n times, expected $1"
}
# partoff [N]: byte offset of partition N (default 1: boot, FAT) in the scenario's disk, from the GPT
partoff() {
  python3 - "$W/$CUR.img" "${1:-1}" <<'PY'
import struct, sys
with open(sys.argv[1], "rb") as f:
    f.seek(512); hdr = f.read(92)             # GPT header (LBA 1)
    size = struct.unpack_from("<I", hdr, 84)[0]  # size of a partition entry
    f.seek(struct.unpack_from("<Q", hdr, 72)[0] * 512 + (int(sys.argv[2]) - 1) * size)
    print(struct.unpack_from("<Q", f.read(128), 32)[0] * 512)  # its first LBA
PY
}
bootpart() { partoff 1; }
# uenv NAME=VALUE... : U-Boot variables in uboot.env (and uboot.env.redund, if there) on the
# scenario's disk after QEMU ended, read with fw_printenv; VALUE "" = absent or empty.
# A copy with a bad CRC is an error only with UENV_BAD_OK unset.
uenv() {
  local off f v got
  off=$(bootpart)
  for f in uboot.env uboot.env.redund; do
    rm -f "$W/env.bin"
    if ! mcopy -n -o -i "$W/$CUR.img@@$off" "::/$f" "$W/env.bin" 2>/dev/null; then
      [[ $f == uboot.env ]] && err "no $f on the boot partition"
      continue
    fi
    echo "$W/env.bin 0x0 0x40000" > "$W/fw_env.config"
    if [[ $(fw_printenv -c "$W/fw_env.config" 2>&1 || true) == *'Cannot read environment'* ]]; then
      if [[ -n ${UENV_BAD_OK:-} ]]; then echo "  NOTE: $f: bad CRC (not repaired by ferry)"; else err "$f: bad CRC"; fi
      continue
    fi
    echo "  $f: $(fw_printenv -c "$W/fw_env.config" 2>&1 | grep -E '^(BOOT_|FERRY_)' | tr '\n' ' ')"
    for v in "$@"; do
      got=$(fw_printenv -c "$W/fw_env.config" -n "${v%%=*}" 2>/dev/null || true)
      [[ $got == "${v#*=}" ]] || err "$f: ${v%%=*} is '$got', expected '${v#*=}'"
    done
  done
}
# tear_env: damage one byte of uboot.env (a torn write) on the scenario's disk
tear_env() {
  local off
  off=$(bootpart)
  mcopy -n -o -i "$W/$CUR.img@@$off" ::/uboot.env "$W/env.bin"
  printf 'X' | dd of="$W/env.bin" bs=1 seek=100 conv=notrunc status=none
  mcopy -o -i "$W/$CUR.img@@$off" "$W/env.bin" ::/uboot.env
}
# Step list for the next boot: S+=(...) adds console.py steps; at_shell CMD adds: wait for
# the status line and the shell prompt of the boot, then type CMD.
S=()
at_shell() { S+=("expect:^FERRY-TEST: status " "expect:$PROMPT" "send:$1"); }
OFF='sync; poweroff -f'

# ---------------------------------------------------------------- scenarios
s1() { # first boot on a card 64 MiB bigger than the image: data grown once; a second boot
  fresh
  truncate -s +64M "$W/$CUR.img"
  at_shell 'reboot -f'
  S+=('expect:FERRY-TEST: booted slot=a'); at_shell "$OFF"; S+=(exit); boot 120
  seen 2 'FERRY-TEST: booted slot=a version=1\.0\.0'
  seen 2 'FERRY-TEST: check rc=0'
  seen 2 'FERRY-TEST: provisioned hostname=edge-qemu-01 role=agent mode=600 k3s-config=600 token=yes'
  seen 2 'FERRY-TEST: k3s started as: agent; its config names node "edge-qemu-01"'
  # the data partition (32 MiB in the image) fills the card on the first boot only
  seen 1 'grow-data: partition data is 98 MiB \(table rewritten\); file system grown from 32 to 98 MiB'
  seen 1 'grow-data: partition data is 98 MiB; file system already fills it'
  seen 2 'FERRY-TEST: data size=(8[5-9]|9[0-8]) MiB'
  status 0 booted=a state=idle slots.a.status=good slots.a.version=1.0.0 slots.b.status=empty \
    boot.trial=null 'boot.order=["a"]' last=null
  status 1 booted=a state=idle slots.a.status=good 'boot.order=["a"]' last=null
  uenv BOOT_ORDER=A FERRY_TRIAL=
  # boot-to-ready of the appliance (the default runlevel done), for the README
  tr -d '\r' < "$LOGS/$CUR.log" | grep -ao 'ferry appliance: ready [0-9.]*s' | sed 's/^/  /'
}

s2() { # update from a local bundle, commit, stays on B
  fresh
  at_shell 'ferry install /dev/vdb'
  S+=('expect:FERRY-TEST: booted slot=b'); at_shell 'reboot -f'
  S+=('expect:FERRY-TEST: booted slot=b'); at_shell "$OFF"; S+=(exit)
  boot 180 --bundle 1.1.0
  seen 1 'FERRY-TEST: booted slot=a version=1\.0\.0'
  seen 2 'FERRY-TEST: booted slot=b version=1\.1\.0'
  seen 3 'FERRY-TEST: check rc=0'
  status 0 booted=a state=idle slots.a.status=good
  status 1 booted=b state=idle slots.b.status=good slots.b.version=1.1.0 last.result=committed \
    last.slot=b last.version=1.1.0 'boot.order=["b","a"]' boot.trial=null slots.a.status=good
  status 2 booted=b state=idle slots.b.status=good last.result=committed 'boot.order=["b","a"]'
  uenv 'BOOT_ORDER=B A' FERRY_TRIAL=
}

s3() { # bad k3s: health fails, ferry rolls back
  fresh
  at_shell 'ferry install /dev/vdb'
  S+=('expect:FERRY-TEST: booted slot=b' 'expect:FERRY-TEST: booted slot=a'); at_shell "$OFF"; S+=(exit)
  boot 180 --bundle 1.2.0
  seen 1 'FERRY-TEST: booted slot=b version=1\.2\.0'
  seen 2 'FERRY-TEST: booted slot=a version=1\.0\.0'
  seen 1 'health failed: slot b \(1\.2\.0\) rolled back'
  # last.version is not checked: ferry reports it only for committed (see NOTES.md)
  status -1 booted=a state=idle last.result=rolled-back last.slot=b slots.b.status=bad \
    slots.b.version=1.2.0 slots.b.bootable=false slots.a.status=good slots.a.version=1.0.0 \
    'boot.order=["a"]' boot.trial=null
  uenv BOOT_ORDER=A FERRY_TRIAL=
}

s4() { # kernel panics: U-Boot falls back after 3 attempts
  fresh
  at_shell 'ferry install /dev/vdb'
  S+=('expect:FERRY-TEST: booted slot=a'); at_shell "$OFF"; S+=(exit)
  boot 240 --bundle 1.3.0
  seen 3 'Attempted to kill init'
  seen 1 'ferry: trial slot B: no tries left, skipping'
  seen 0 'FERRY-TEST: booted slot=b'
  seen 2 'FERRY-TEST: booted slot=a version=1\.0\.0'
  seen 1 'ferry: trial slot B: 0 tries left after this one'
  status -1 booted=a state=idle last.result=boot-failed last.slot=b slots.b.status=bad \
    slots.b.version=1.3.0 slots.b.bootable=false slots.a.status=good 'boot.order=["a"]' boot.trial=null
  uenv BOOT_ORDER=A FERRY_TRIAL=
}

s5() { # power cut while writing the rootfs payload, then install again
  fresh
  at_shell 'ferry install /dev/vdb'; S+=('expect:writing payload.*rootfs' sleep:0.3 kill)
  boot 120 --bundle 1.1.0
  S+=('expect:FERRY-TEST: booted slot=a'); at_shell 'ferry install /dev/vdb'
  S+=('expect:FERRY-TEST: booted slot=b'); at_shell "$OFF"; S+=(exit)
  boot 240 --bundle 1.1.0
  seen 2 'FERRY-TEST: booted slot=a version=1\.0\.0'
  seen 1 'FERRY-TEST: booted slot=b version=1\.1\.0'
  # after the power cut: still on A, and the install is either resumable or recorded
  status 1 booted=a 'boot.order=["a"]'
  if ! python3 "$HERE/console.py" status "$LOGS/$CUR.log" 1 state=installing >/dev/null &&
     ! python3 "$HERE/console.py" status "$LOGS/$CUR.log" 1 last.result=interrupted >/dev/null; then
    err "after the power cut: neither state installing nor last.result interrupted"
  fi
  status 2 booted=b state=idle slots.b.status=good slots.b.version=1.1.0 last.result=committed \
    'boot.order=["b","a"]'
  uenv 'BOOT_ORDER=B A' FERRY_TRIAL=
  # the cut came before the rootfs payload was complete: it is finished only once, later
  seen 1 'payload written and read back.*payload=rootfs'
}

s6() { # torn uboot.env after a commit to B: U-Boot uses uboot.env.redund and stays on B
  fresh
  at_shell 'ferry install /dev/vdb'; S+=('expect:FERRY-TEST: booted slot=b'); at_shell "$OFF"; S+=(exit)
  boot 120 --bundle 1.1.0
  tear_env
  at_shell "$OFF"; S+=(exit)
  boot 60
  seen 1 'ferry: uboot.env bad, using uboot.env.redund: BOOT_ORDER=B A FERRY_TRIAL='
  seen 2 'FERRY-TEST: booted slot=b version=1\.1\.0'
  status -1 booted=b state=idle slots.b.status=good last.result=committed 'boot.order=["b","a"]'
  UENV_BAD_OK=1 uenv 'BOOT_ORDER=B A' FERRY_TRIAL=
}

s7() { # the daemon downloads the update from the host's feed over QEMU's network
  fresh
  rm -rf "$W/feed"
  "$HOSTF" -q feed publish --feed "$W/feed" --channel stable --bundle "$W/v1.1.0.ferry" --key "$W/dev.key" >/dev/null
  python3 -m http.server "$FEEDPORT" --bind 127.0.0.1 --directory "$W/feed" >"$LOGS/$CUR.http.log" 2>&1 &
  local http=$!
  at_shell 'ferry daemon --once'
  S+=('expect:FERRY-TEST: booted slot=b'); at_shell "$OFF"; S+=(exit)
  boot 180
  kill "$http" 2>/dev/null; wait "$http" 2>/dev/null || true
  grep -q 'GET /stable/bundles/qemu-aarch64-virt-1.1.0.ferry' "$LOGS/$CUR.http.log" || err "the guest never fetched the bundle"
  seen 1 'FERRY-TEST: booted slot=b version=1\.1\.0'
  status -1 booted=b state=idle slots.b.status=good slots.b.version=1.1.0 last.result=committed \
    'boot.order=["b","a"]'
  uenv 'BOOT_ORDER=B A' FERRY_TRIAL=
}

s8() { # rollback window: a rolled-back trial whose reboot has not happened refuses everything
  fresh
  at_shell 'ferry install /dev/vdb'
  S+=('expect:FERRY-TEST: booted slot=b')
  at_shell 'ferry install /dev/vdb; echo "FERRY-TEST: install rc=$?"; ferry rollback; echo "FERRY-TEST: rollback rc=$?"; reboot -f'
  S+=('expect:FERRY-TEST: booted slot=a'); at_shell "$OFF"; S+=(exit)
  boot 180 --bundle 1.4.0
  seen 1 'FERRY-TEST: booted slot=b version=1\.4\.0'
  seen 1 'health failed: slot b \(1\.4\.0\) rolled back'
  seen 1 'FERRY-TEST: install rc=54'
  seen 1 'FERRY-TEST: rollback rc=54'
  seen 2 'FERRY-TEST: booted slot=a version=1\.0\.0'
  status 1 booted=b state=reboot-pending slots.b.status=bad 'boot.order=["a"]' boot.trial=null
  status -1 booted=a state=idle slots.a.status=good last.result=rolled-back slots.b.status=bad \
    'boot.order=["a"]'
  uenv BOOT_ORDER=A FERRY_TRIAL=
}

s9() { # arming window: cut after arming, then another install cut mid-write: A boots
  fresh
  python3 -m http.server "$FEEDPORT" --bind 127.0.0.1 --directory "$W" >"$LOGS/$CUR.http.log" 2>&1 &
  local http=$!
  # find the fault point of the record write right after the env is armed, on a full run
  # (then cancelled), and cut there; then install 1.1.0 over HTTP and cut the power mid-write
  at_shell 'FERRY_FAULT_TRACE=1 ferry install --no-reboot /dev/vdb 2>/tmp/trace; ferry rollback; N=$(awk '"'"'/fault point/ { n=$4; sub(":", "", n); if ($0 ~ /boot file write/) { c="" } else if (c == "" && $0 ~ /state write/) c=n } END { print c }'"'"' /tmp/trace); echo "FERRY-TEST: cut at $N"; FERRY_CRASH_AT=$N ferry install --no-reboot /dev/vdb; echo "FERRY-TEST: cut rc=$?"; ferry status; echo "FERRY-TEST: http install"; ferry install --no-reboot http://10.0.2.2:'"$FEEDPORT"'/v1.1.0.ferry'
  S+=('expect:FERRY-TEST: http install' 'expect:writing payload.*rootfs' sleep:0.3 kill)
  boot 240 --bundle 1.2.0
  S+=('expect:FERRY-TEST: booted slot=a'); at_shell "$OFF"; S+=(exit)
  boot 90 --bundle 1.2.0
  kill "$http" 2>/dev/null; wait "$http" 2>/dev/null || true
  grep -q 'GET /v1.1.0.ferry' "$LOGS/$CUR.http.log" || err "the guest never fetched the bundle"
  seen 1 'simulated power cut before state write'
  seen 1 'FERRY-TEST: cut rc=134'
  seen 0 'FERRY-TEST: booted slot=b'
  seen 2 'FERRY-TEST: booted slot=a version=1\.0\.0'
  status -1 booted=a state=installing 'boot.order=["a"]' slots.b.bootable=false
  uenv BOOT_ORDER=A FERRY_TRIAL=
}

s10() { # the raspberry-pi-4 image on QEMU's raspi3b: boot A, install 1.1.0, trial B, commit
  # raspi3b's USB (dwc2) drops QEMU's usb-net here, and the model has no other network:
  # the image's one interface is a dummy (k3s and the health gate need "net" up)
  local P=$B/pi o v off
  mkdir -p "$P"
  sed -e 's|^board = .*|board = "raspberry-pi-4"|' -e 's|^disk = .*|disk = "/dev/ferry/disk"|' \
    "$B/ferry.toml" > "$P/ferry.toml"
  for v in 1.0.0 1.1.0; do
    o=$P/v$v
    mkdir -p "$o"
    "$APP/build.sh" --board raspberry-pi-4 --version "$v" --k3s "$B/k3s-GOOD/k3s" --key "$W/dev.key" \
      --out "$o" --ferry "$DEVF" --host-ferry "$HOSTF" --config "$P/ferry.toml" --overlay "$O" \
      --kernel-modules dummy --net "dummy0 10.0.2.15/24 10.0.2.2" \
      --disable ferry $([[ $v == 1.0.0 ]] || echo --no-image) >"$o/build.log" 2>&1 ||
      { cat "$o/build.log"; err "build.sh --board raspberry-pi-4 $v failed"; return; }
  done
  # QEMU's SD card must be a power of two: the card is bigger than the image (grow-data)
  cp --sparse=always "$P/v1.0.0/raspberry-pi-4-1.0.0.img" "$W/$CUR.img"
  truncate -s 4G "$W/$CUR.img"
  : > "$LOGS/$CUR.log"
  # the update on the data partition (the raspi3b model has no second disk and no network)
  # (partition 8 is data, board/raspberry-pi-4.toml)
  debugfs -w -R "write $P/v1.1.0/raspberry-pi-4-1.1.0.ferry update.ferry" "$W/$CUR.img?offset=$(partoff 8)" >/dev/null 2>&1 ||
    err "debugfs could not put the bundle on the data partition"
  # U-Boot and the board's device tree as the firmware would hand them over
  off=$(bootpart)
  mcopy -n -o -i "$W/$CUR.img@@$off" ::/u-boot.bin "$P/u-boot.bin"
  mcopy -n -o -i "$W/$CUR.img@@$off" ::/bcm2837-rpi-3-b.dtb "$P/rpi3.dtb"
  at_shell 'ferry install /data/update.ferry'
  S+=('expect:ferry: trial slot B: 2 tries left' 'expect:FERRY-TEST: booted slot=b')
  S+=("expect:^FERRY-TEST: status " "expect:$PROMPT" kill)
  printf '\n[scenarios.sh] === QEMU raspi3b start (%s) ===\n' "$(date +%T)" >> "$LOGS/$CUR.log"
  python3 "$HERE/console.py" run "$LOGS/$CUR.log" 1500 "${S[@]}" -- \
    qemu-system-aarch64 -M raspi3b -kernel "$P/u-boot.bin" -dtb "$P/rpi3.dtb" \
    -drive "if=sd,file=$W/$CUR.img,format=raw" -serial null -serial stdio -display none -monitor none ||
    err "console steps failed (see log)"
  S=()
  seen 1 'ferry: booting slot A'
  seen 1 'Kernel command line: .*ferry\.slot=a ferry\.root=PARTLABEL=rootfs_a'
  seen 1 'FERRY-INITRD: switching to /dev/mmcblk0p3'
  seen 1 'FERRY-TEST: booted slot=a version=1\.0\.0'
  seen 1 'grow-data: partition data is [0-9]+ MiB \(table rewritten\); file system grown'
  seen 1 'ferry: trial slot B: 2 tries left after this one'
  seen 1 'FERRY-INITRD: switching to /dev/mmcblk0p6'
  seen 1 'FERRY-TEST: booted slot=b version=1\.1\.0'
  seen 2 'FERRY-TEST: check rc=0'
  status 0 booted=a state=idle slots.a.status=good slots.a.version=1.0.0
  status -1 booted=b state=idle slots.b.status=good slots.b.version=1.1.0 'boot.order=["b","a"]' \
    boot.trial=null last.result=committed
  # the boot state as fw_printenv reads it: B committed, no trial
  mcopy -n -o -i "$W/$CUR.img@@$off" ::/ferry.env "$W/env.bin" 2>/dev/null || err "no ferry.env"
  echo "$W/env.bin 0x0 0x4000" > "$W/fw_env.config"
  v=$(fw_printenv -c "$W/fw_env.config" -n BOOT_ORDER 2>/dev/null || true)
  [[ $v == "B A" ]] || err "ferry.env: BOOT_ORDER is '$v', expected 'B A'"
  v=$(fw_printenv -c "$W/fw_env.config" -n FERRY_TRIAL 2>/dev/null || true)
  [[ -z $v ]] || err "ferry.env: FERRY_TRIAL is '$v', expected empty"
}

NAMES=(first-boot update bad-k3s kernel-panic power-cut torn-env network-feed rollback-window arming-window
  pi-board)
rm -rf "$FAILLOGS"/scenario-*.log
FAILED=()
for n in 1 2 3 4 5 6 7 8 9 10; do
  if [[ -n $ONLY && ,$ONLY, != *,$n,* ]]; then continue; fi
  CUR=s$n-${NAMES[n - 1]}
  note "scenario $n: ${NAMES[n - 1]}"
  ERRS=()
  start=$SECONDS
  "s$n"
  seen 0 'FERRY-TEST: ERROR|panicked at'  # init errors, Rust panics
  dur=$((SECONDS - start))
  rm -f "$W/$CUR.img"
  if [[ ${#ERRS[@]} -eq 0 ]]; then
    printf 'scenario %2d %-15s PASS  %4ds\n' "$n" "${NAMES[n - 1]}" "$dur"
    [[ $KEEP == 1 ]] && { mkdir -p "$FAILLOGS"; cp "$LOGS/$CUR.log" "$FAILLOGS/scenario-$CUR.log"; }
  else
    printf 'scenario %2d %-15s FAIL  %4ds  (log: %s)\n' "$n" "${NAMES[n - 1]}" "$dur" \
      "target/qemu-logs/scenario-$CUR.log"
    mkdir -p "$FAILLOGS"
    cp "$LOGS/$CUR.log" "$FAILLOGS/scenario-$CUR.log"
    FAILED+=("$n")
  fi
done
note "done"
[[ ${#FAILED[@]} -eq 0 ]] || { echo "FAILED scenarios: ${FAILED[*]}"; exit 1; }
echo "all selected scenarios PASS"
