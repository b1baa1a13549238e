#!/usr/bin/env bash
# ferry benchmark harness: install pipeline vs dd, vs RAUC, bmaptool vs dd,
# memory, device binary size, per-stage throughput. See benches/README.md.
#
#   benches/run.sh [--size-mib N] [--rounds N] [--quick]
#
# Needs root (losetup, drop_caches, mounting RAUC bundles), rauc, bmap-tools,
# squashfs-tools, dbus, e2fsprogs, fdisk (sfdisk), GNU time, openssl, python3,
# musl-tools (the device twin for the memory rows; skipped without it).
# Large files live in $FERRY_BENCH_DIR (default /root/.cache/ferry/bench),
# never in the repository. Prints ONE markdown table, then the commands run.
set -euo pipefail

SIZE_MIB=1024
ROUNDS=5
while [ $# -gt 0 ]; do
    case "$1" in
    --size-mib) SIZE_MIB="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --quick) SIZE_MIB=256; ROUNDS=1; shift ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "run.sh needs root (losetup, drop_caches, mount)" >&2; exit 2; }

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${FERRY_BENCH_DIR:-/root/.cache/ferry/bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/ferry/bench-target}
SMALL_MIB=64
PY=/usr/bin/python3
[ -x $PY ] || PY=python3
mkdir -p "$WORK"
RUN="$WORK/run"                 # per-run results and logs
rm -rf "$RUN"
mkdir -p "$RUN/res"
CMDS="$RUN/commands.txt"
: >"$CMDS"
T_START=$(date +%s)

say() { echo "== $*" >&2; }
logcmd() { printf '%s\n' "$*" >>"$CMDS"; }
# Run a command, logging it.
x() { logcmd "$*"; "$@"; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
load1() { cut -d' ' -f1 </proc/loadavg; }
LOADS=()
note_load() { LOADS+=("$1 $(load1)"); }
# Other processes holding a CPU (their lifetime average %CPU > 30), e.g. fuzzers or QEMU.
BUSY=""
note_busy() {
    local b
    b=$(ps -eo pcpu=,comm= --sort=-pcpu | awk -v me=$$ '$1 > 30 {printf "%s%s (%.0f%%)", (n++ ? ", " : ""), $2, $1}')
    BUSY="$BUSY$1: ${b:-none}; "
}

# timed NAME CMD...: drop the page cache, run CMD under /usr/bin/time -v,
# record wall seconds (ns clock) and peak RSS (KiB) under $RUN/res/NAME.*
timed() {
    local name=$1; shift
    logcmd "$*"
    drop_caches
    local t0 t1
    t0=$(date +%s%N)
    if ! /usr/bin/time -v -o "$RUN/time.txt" "$@" >"$RUN/out.txt" 2>"$RUN/err.txt"; then
        echo "FAILED: $*" >&2
        tail -5 "$RUN/err.txt" "$RUN/out.txt" >&2
        exit 1
    fi
    t1=$(date +%s%N)
    echo "$(( (t1 - t0) / 1000000 ))" >>"$RUN/res/$name.ms"
    awk -F: '/Maximum resident set size/ {gsub(/ /,"",$2); print $2}' "$RUN/time.txt" >>"$RUN/res/$name.rss"
    awk -F: '/User time|System time/ {s += $2} END {print s}' "$RUN/time.txt" >>"$RUN/res/$name.cpu"
    echo "$(load1)" >>"$RUN/res/$name.load"
    printf '   %-28s %8.2f s\n' "$name" "$(echo "$(( (t1 - t0) / 1000000 ))" | awk '{print $1/1000}')" >&2
}
# median of a file of numbers
med() { sort -n "$1" | awk '{v[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
runs_s() { awk '{printf "%s%.2f", (NR>1?" / ":""), $1/1000}' "$1"; }
mbps() { awk -v b="$1" -v ms="$2" 'BEGIN {printf "%.0f", b/1e6/(ms/1000)}'; }

ROWS="$RUN/rows.md"
: >"$ROWS"
row() { printf '| %s | %s | %s | %s | %s |\n' "$@" >>"$ROWS"; }
verdict() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN {ok = (op==">=") ? (v>=t) : (v<t); print ok ? "met" : "**missed**"}'; }

cleanup() {
    set +e
    [ -n "${DAEMON_PID:-}" ] && kill "$DAEMON_PID" 2>/dev/null
    [ -n "${RAUC_PID:-}" ] && kill "$RAUC_PID" 2>/dev/null
    [ -n "${DBUS_PID:-}" ] && kill "$DBUS_PID" 2>/dev/null
    for l in ${LOOPS:-}; do losetup -d "$l" 2>/dev/null; done
}
trap cleanup EXIT
LOOPS=""
loop_attach() { # file VAR: VAR = a loop device over file (direct I/O to the backing file: no second page cache)
    local l
    logcmd "losetup --direct-io=on -f --show $1"
    l=$(losetup --direct-io=on -f --show "$1")
    LOOPS="$LOOPS $l"
    printf -v "$2" '%s' "$l"
}

# ---------------------------------------------------------------- build
say "build"
note_load build
cd "$REPO"
x cargo build --release --locked -q
x cargo build --release --locked -q --no-default-features --target aarch64-unknown-linux-musl
FERRY="$CARGO_TARGET_DIR/release/ferry"
DEVBIN="$CARGO_TARGET_DIR/aarch64-unknown-linux-musl/release/ferry"
# The device binary's x86_64 twin (same features, static musl, same allocator)
# for the memory rows: the aarch64 one cannot run here except under qemu-user,
# whose RSS is the emulator's. Needs musl-tools (musl-gcc) for zstd's C code.
DEVX=""
if command -v musl-gcc >/dev/null && rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    x env CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --locked -q --no-default-features --target x86_64-unknown-linux-musl
    DEVX="$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/ferry"
fi

# ---------------------------------------------------------------- test data
# Cached per size; rebuilt when the generator or the ferry binary changes.
D="$WORK/data-$SIZE_MIB"
DATA_VERSION=2   # bump when the recipe below changes
STAMP="$DATA_VERSION $(cat "$REPO/benches/gen-rootfs.py" "$REPO"/src/bundle/*.rs | sha256sum | cut -c1-16)"
mkrootfs() { # dir size_mib out
    rm -rf "$1"
    x $PY "$REPO/benches/gen-rootfs.py" "$1" "$2" 1 >/dev/null
    rm -f "$3"
    x mke2fs -q -t ext4 -b 4096 -U 6f8b1c2e-7a3d-4e5f-9a0b-1c2d3e4f5a6b \
        -E hash_seed=6f8b1c2e-7a3d-4e5f-9a0b-1c2d3e4f5a6b,root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard \
        -d "$1" "$3" "${2}M"
    rm -rf "$1"
}
mkboard() { # dir rootfs_mib -> $dir/board.toml (+ boot.cmd beside it, as image build wants)
    local r=$(($2 + 4))
    mkdir -p "$1/bench-board"
    cp "$REPO/board/qemu-aarch64-virt/boot.cmd" "$1/bench-board/"
    sed -e 's/^name = "qemu-aarch64-virt"/name = "bench-board"/' \
        -e "/^size_mib = 96/s/96/$r/" \
        -e "s/^disk_size_mib = 420/disk_size_mib = $((32 + 64 * 2 + 16 * 2 + 32 + 2 * r + 4))/" \
        "$REPO/board/qemu-aarch64-virt.toml" >"$1/board.toml"
}
if [ "$(cat "$D/stamp" 2>/dev/null)" != "$STAMP" ]; then
    say "test data in $D (${SIZE_MIB} MiB rootfs, ${SMALL_MIB} MiB rootfs, bundles, RAUC bundles)"
    rm -rf "$D"
    mkdir -p "$D"
    mkrootfs "$D/tree" "$SIZE_MIB" "$D/rootfs.img"
    mkrootfs "$D/tree-small" "$SMALL_MIB" "$D/rootfs-small.img"
    mkboard "$D" "$SIZE_MIB"
    x "$FERRY" key generate bench --dir "$D" >/dev/null
    # a slot holds one whole release: every bundle carries a (small) kernel and k3s too
    head -c 262144 /dev/urandom >"$D/kernel.img"
    head -c 262144 /dev/urandom >"$D/k3s.img"
    for v in 1.0.0 2.0.0; do
        x "$FERRY" -q bundle create --board qemu-aarch64-virt --version $v --rootfs "$D/rootfs.img" \
            --kernel "$D/kernel.img" --k3s "$D/k3s.img" --key "$D/bench.key" -o "$D/v$v.ferry" >/dev/null
    done
    x "$FERRY" -q bundle create --board qemu-aarch64-virt --version 2.0.0 --rootfs "$D/rootfs-small.img" \
        --kernel "$D/kernel.img" --k3s "$D/k3s.img" --key "$D/bench.key" -o "$D/small.ferry" >/dev/null
    # RAUC: plain bundles of the same rootfs; the default (gzip, 128 KiB blocks)
    # and zstd level 9 with 1 MiB blocks (ferry's codec, level and chunk size).
    mkdir -p "$D/rauc/content"
    x openssl req -x509 -newkey rsa:2048 -nodes -keyout "$D/rauc/key.pem" -out "$D/rauc/cert.pem" \
        -days 3650 -subj /CN=ferry-bench 2>/dev/null
    ln "$D/rootfs.img" "$D/rauc/content/rootfs.img"
    printf '[update]\ncompatible=ferry-bench\nversion=2.0.0\n\n[bundle]\nformat=plain\n\n[image.rootfs]\nfilename=rootfs.img\n' \
        >"$D/rauc/content/manifest.raucm"
    x rauc bundle --cert="$D/rauc/cert.pem" --key="$D/rauc/key.pem" "$D/rauc/content" "$D/rauc/gzip.raucb" >/dev/null 2>&1
    x rauc bundle --cert="$D/rauc/cert.pem" --key="$D/rauc/key.pem" \
        --mksquashfs-args="-comp zstd -Xcompression-level 9 -b 1M" "$D/rauc/content" "$D/rauc/zstd.raucb" >/dev/null 2>&1
    echo "$STAMP" >"$D/stamp"
fi
BYTES=$((SIZE_MIB * 1048576))
RATIO=$(awk -v a="$BYTES" -v b="$(stat -c %s "$D/v2.0.0.ferry")" 'BEGIN {printf "%.2f", a/b}')
RAUC_GZ_RATIO=$(awk -v a="$BYTES" -v b="$(stat -c %s "$D/rauc/gzip.raucb")" 'BEGIN {printf "%.2f", a/b}')

# ---------------------------------------------------------------- targets
# Two disks built by `ferry image build` (slot A = 1.0.0): one used as an image
# file, one behind a loop device. Each has its own device record.
say "disk images and loop devices"
mkdev() { # name disk-path
    local s="$RUN/$1"
    mkdir -p "$s/keys"
    cp "$D/bench.pub" "$s/keys/"
    echo "ferry.slot=a" >"$s/cmdline"
    echo "boot-0" >"$s/boot_id"
    cat >"$s/ferry.toml" <<EOF
board = "$D/board.toml"
disk = "$2"
state_dir = "$s/state"
keyring = "$s/keys"
cmdline = "$s/cmdline"
boot_id = "$s/boot_id"
reboot = "record"
[daemon]
socket = "$s/ferry.sock"
EOF
}
for t in file loop; do
    x "$FERRY" -q image build --board "$D/board.toml" --bundle "$D/v1.0.0.ferry" --key "$D/bench.pub" \
        -o "$RUN/disk-$t.img" --state-dir "$RUN/$t/state" >/dev/null 2>&1
done
loop_attach "$RUN/disk-loop.img" LOOP_DISK
mkdev file "$RUN/disk-file.img"
mkdev loop "$LOOP_DISK"
# rootfs_b's byte offset, for dd into the same place ferry writes
ROOTFS_B_OFF=$(sfdisk -J "$RUN/disk-file.img" | $PY -c 'import json,sys; t=json.load(sys.stdin)["partitiontable"]; print(next(p["start"] for p in t["partitions"] if p.get("name")=="rootfs_b")*t["sectorsize"])')
logcmd "sfdisk -J $RUN/disk-file.img   # rootfs_b offset = $ROOTFS_B_OFF"

# RAUC: private system bus, slots on loop devices like ferry's.
x truncate -s "$(((SIZE_MIB + 4) * 1048576))" "$RUN/rauc-slot-a.img" "$RUN/rauc-slot-b.img"
loop_attach "$RUN/rauc-slot-a.img" RAUC_A
loop_attach "$RUN/rauc-slot-b.img" RAUC_B
. "$REPO/benches/rauc.sh"
logcmd "rauc_setup $RUN/rauc $D/rauc/cert.pem $RAUC_A $RAUC_B   # benches/rauc.sh: system.conf, a private system bus"
rauc_setup "$RUN/rauc" "$D/rauc/cert.pem" "$RAUC_A" "$RAUC_B"
logcmd "export DBUS_SYSTEM_BUS_ADDRESS=$DBUS_SYSTEM_BUS_ADDRESS"

BOOTN=0
ferry_install() { # target(file|loop) bundle resname
    local s="$RUN/$1"
    BOOTN=$((BOOTN + 1))
    echo "boot-$BOOTN" >"$s/boot_id"
    timed "$3" "$FERRY" -q --config "$s/ferry.toml" install "$2" --no-reboot
    x "$FERRY" -q --config "$s/ferry.toml" rollback >/dev/null 2>&1
}
rauc_install() { # bundle resname: a fresh `rauc service` per install, so its VmHWM is this install's
    rauc service --conf="$RUN/rauc/system.conf" --override-boot-slot=A >>"$RUN/rauc/service.log" 2>&1 &
    RAUC_PID=$!
    logcmd "rauc service --conf=$RUN/rauc/system.conf --override-boot-slot=A &"
    rauc_wait
    timed "$2" rauc install "$1"
    awk '/VmHWM/ {print $2}' "/proc/$RAUC_PID/status" >>"$RUN/res/$2.hwm"
    # the service's CPU (start-up + this install; squashfs decompression is its sys time)
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$RAUC_PID/stat" >>"$RUN/res/$2.svccpu"
    kill "$RAUC_PID"; wait "$RAUC_PID" 2>/dev/null || true
    RAUC_PID=
}
dd_target() { # target -> "of=... seek" args
    if [ "$1" = file ]; then echo "$RUN/disk-file.img"; else echo "$LOOP_DISK"; fi
}

# ---------------------------------------------------------------- 1+2: install pipeline, dd, RAUC
say "install pipeline: ferry / dd / RAUC, $ROUNDS interleaved rounds of ${SIZE_MIB} MiB (page cache dropped before each run)"
note_load install
note_busy install
# One variant of the round. Each round runs them in a different order (a
# shuffle seeded by the round number, so reruns use the same orders): on this
# VM a run's time depends on what ran just before it (the host's cache and
# write-back of the VM disk, which drop_caches in the guest cannot reset).
variant() {
    local t T
    case $1 in *-file) t=file ;; *-loop) t=loop ;; esac
    [ -n "${t:-}" ] && T=$(dd_target $t)
    case $1 in
    ferry-file | ferry-loop) ferry_install $t "$D/v2.0.0.ferry" "$1" ;;
    dd-direct-*) timed "$1" dd if="$D/rootfs.img" of="$T" bs=4M oflag=direct,seek_bytes seek="$ROOTFS_B_OFF" conv=notrunc,fsync status=none ;;
    dd-fsync-*) timed "$1" dd if="$D/rootfs.img" of="$T" bs=4M oflag=seek_bytes seek="$ROOTFS_B_OFF" conv=notrunc,fsync status=none ;;
    dd-readback-*) timed "$1" bash -c "dd if='$D/rootfs.img' of='$T' bs=4M oflag=direct,seek_bytes seek=$ROOTFS_B_OFF conv=notrunc,fsync status=none && dd if='$T' bs=4M iflag=skip_bytes,count_bytes skip=$ROOTFS_B_OFF count=$BYTES status=none | openssl dgst -sha256" ;;
    rauc-gzip) rauc_install "$D/rauc/gzip.raucb" rauc-gzip-loop ;;
    rauc-zstd) rauc_install "$D/rauc/zstd.raucb" rauc-zstd-loop ;;
    ferry-vs-rauc) ferry_install loop "$D/v2.0.0.ferry" "ferry-loop-vs-rauc" ;;
    ferry-verify) timed "ferry-verify" "$FERRY" -q bundle verify --key "$D/bench.pub" "$D/v2.0.0.ferry" ;;
    esac
}
VARIANTS=(ferry-file dd-direct-file dd-fsync-file dd-readback-file
    ferry-loop dd-direct-loop dd-fsync-loop dd-readback-loop
    rauc-gzip rauc-zstd ferry-vs-rauc ferry-verify)
for r in $(seq "$ROUNDS"); do
    say "round $r/$ROUNDS"
    for v in $(printf '%s\n' "${VARIANTS[@]}" | shuf --random-source=<(yes "$r$r$r$r$r$r$r$r")); do
        variant "$v"
    done
done
note_load install-end
note_busy install-end

# ---------------------------------------------------------------- 3: bmaptool vs dd
say "bmaptool copy vs dd of a sparse ferry disk image"
note_load bmap
BMAP_IMG="$RUN/flash.img"
x "$FERRY" -q image build --board "$D/board.toml" --bundle "$D/v1.0.0.ferry" --key "$D/bench.pub" -o "$BMAP_IMG" >/dev/null 2>&1
logcmd "bmaptool create $BMAP_IMG > $BMAP_IMG.bmap"
bmaptool create "$BMAP_IMG" >"$BMAP_IMG.bmap"
IMG_BYTES=$(stat -c %s "$BMAP_IMG")
IMG_ALLOC=$(($(stat -c %b "$BMAP_IMG") * 512))
x fallocate -l "$IMG_BYTES" "$RUN/flash-target.img"
loop_attach "$RUN/flash-target.img" FLASH_DEV
FLASH_OK=0
if "$FERRY" flash --help >/dev/null 2>&1; then FLASH_OK=1; fi
for r in $(seq "$ROUNDS"); do
    timed bmaptool-copy bmaptool -q copy --bmap "$BMAP_IMG.bmap" "$BMAP_IMG" "$FLASH_DEV"
    timed dd-image dd if="$BMAP_IMG" of="$FLASH_DEV" bs=4M oflag=direct conv=fsync status=none
    if [ $FLASH_OK = 1 ]; then
        timed ferry-flash "$FERRY" -q flash --yes "$BMAP_IMG" "$FLASH_DEV"
    fi
done

# ---------------------------------------------------------------- 4: memory
say "memory: verify and install of a ${SMALL_MIB} MiB bundle (the ${SIZE_MIB} MiB figures come from the runs above), daemon idle"
note_load memory
for r in $(seq "$ROUNDS"); do
    timed verify-small "$FERRY" -q bundle verify --key "$D/bench.pub" "$D/small.ferry"
    ferry_install file "$D/small.ferry" install-small
done
# the device twin: install and verify of the full-size bundle, per round
if [ -n "$DEVX" ]; then
    for r in $(seq "$ROUNDS"); do
        timed devx-verify "$DEVX" -q bundle verify --key "$D/bench.pub" "$D/v2.0.0.ferry"
        BOOTN=$((BOOTN + 1))
        echo "boot-$BOOTN" >"$RUN/file/boot_id"
        timed devx-install "$DEVX" -q --config "$RUN/file/ferry.toml" install "$D/v2.0.0.ferry" --no-reboot
        x "$FERRY" -q --config "$RUN/file/ferry.toml" rollback >/dev/null 2>&1
    done
fi
DAEMONBIN=${DEVX:-$FERRY}
logcmd "$DAEMONBIN -q --config $RUN/file/ferry.toml daemon &   # VmRSS from /proc/PID/status after 2 s, then kill"
for r in $(seq "$ROUNDS"); do
    BOOTN=$((BOOTN + 1))
    echo "boot-$BOOTN" >"$RUN/file/boot_id"
    "$DAEMONBIN" -q --config "$RUN/file/ferry.toml" daemon >>"$RUN/daemon.log" 2>&1 &
    DAEMON_PID=$!
    sleep 2
    awk '/VmRSS/ {print $2}' "/proc/$DAEMON_PID/status" >>"$RUN/res/daemon.rss"
    DAEMON_THREADS=$(awk '/Threads/ {print $2}' "/proc/$DAEMON_PID/status")
    kill "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true
    DAEMON_PID=
done
DAEMON_RSS=$(med "$RUN/res/daemon.rss")

# ---------------------------------------------------------------- 5: size
note_load size
x cp "$DEVBIN" "$RUN/ferry-aarch64"
STRIP=$(command -v aarch64-linux-gnu-strip || command -v llvm-strip || true)
[ -n "$STRIP" ] && x "$STRIP" "$RUN/ferry-aarch64"
DEV_SIZE=$(stat -c %s "$RUN/ferry-aarch64")

# ---------------------------------------------------------------- 6: stages
say "per-stage throughput (cargo bench --bench stages)"
note_load stages
logcmd "FERRY_BENCH_DATA=$D/rootfs.img cargo bench --locked --bench stages"
FERRY_BENCH_DATA="$D/rootfs.img" cargo bench --locked -q --bench stages >"$RUN/stages.tsv" 2>"$RUN/stages.err" || {
    cat "$RUN/stages.err" >&2; exit 1; }
note_load end

# ---------------------------------------------------------------- table
R="$RUN/res"
m() { med "$R/$1.ms"; }
cpu() { awk -v c="$(med "$R/$1.cpu")" 'BEGIN {printf ", CPU %.1f s", c}'; }
rss_mib() { awk -v k="$(med "$R/$1.rss")" 'BEGIN {printf "%.1f MiB", k/1024}'; }
for t in file loop; do
    case $t in file) where="image file (\`$RUN/disk-file.img\`, partition rootfs_b)" ;;
               loop) where="loop device (\`losetup --direct-io=on\` over a disk image)" ;; esac
    F=$(m ferry-$t); DD=$(m dd-direct-$t); DF=$(m dd-fsync-$t); DR=$(m dd-readback-$t)
    row "1" "ferry install → $where: verify + decompress + write + fdatasync + read-back" "$(mbps $BYTES "$F") MB/s$(cpu ferry-$t)" "$(runs_s "$R/ferry-$t.ms")" ""
    row "1" "dd oflag=direct conv=fsync → same partition" "$(mbps $BYTES "$DD") MB/s$(cpu dd-direct-$t)" "$(runs_s "$R/dd-direct-$t.ms")" ""
    row "1" "dd buffered conv=fsync → same partition" "$(mbps $BYTES "$DF") MB/s$(cpu dd-fsync-$t)" "$(runs_s "$R/dd-fsync-$t.ms")" ""
    row "1" "dd oflag=direct conv=fsync, then dd read-back \| openssl dgst -sha256 (the I/O ferry does)" "$(mbps $BYTES "$DR") MB/s$(cpu dd-readback-$t)" "$(runs_s "$R/dd-readback-$t.ms")" ""
    for v in direct fsync; do
        dv=$(m dd-$v-$t)
        ratio=$(awk -v a="$dv" -v b="$F" 'BEGIN {printf "%.2f", a/b}')
        row "1" "**ferry / dd ($v), $t** (throughput ratio)" "**$ratio**" "" "$([ $v = direct ] && echo "≥ 0.8: $(verdict "$ratio" 0.8 '>=')")"
    done
    ratio=$(awk -v a="$DR" -v b="$F" 'BEGIN {printf "%.2f", a/b}')
    row "1" "ferry / (dd direct + read-back), $t" "$ratio" "" "(context)"
done
V=$(m ferry-verify)
row "1" "ferry bundle verify (no writes: read + SHA-256 + zstd + SHA-256 of output)" "$(mbps $BYTES "$V") MB/s$(cpu ferry-verify)" "$(runs_s "$R/ferry-verify.ms")" "(context)"
FL=$(m ferry-loop-vs-rauc)
for c in gzip zstd; do
    RA=$(m rauc-$c-loop)
    case $c in gzip) what="RAUC default plain bundle: squashfs gzip, 128 KiB blocks, ratio $RAUC_GZ_RATIO" ;;
               zstd) what="RAUC plain bundle, squashfs zstd -9, 1 MiB blocks (ferry's codec)" ;; esac
    row "2" "rauc install → loop slot; $what" "$(awk -v ms="$RA" -v c="$(med "$R/rauc-$c-loop.svccpu")" 'BEGIN {printf "%.2f s, CPU %.1f s (service)", ms/1000, c}')" "$(runs_s "$R/rauc-$c-loop.ms")" ""
done
row "2" "ferry install → loop device (same rounds as RAUC)" "$(awk -v ms="$FL" 'BEGIN {printf "%.2f s", ms/1000}')$(cpu ferry-loop-vs-rauc)" "$(runs_s "$R/ferry-loop-vs-rauc.ms")" ""
for c in gzip zstd; do
    RA=$(m rauc-$c-loop)
    ratio=$(awk -v a="$FL" -v b="$RA" 'BEGIN {printf "%.2f", a/b}')
    row "2" "**ferry / RAUC ($c) time**" "**$ratio**" "" "$([ $c = zstd ] && echo "≤ 0.7: $(verdict "$ratio" 0.7001 '<')" || echo "< 1: $(verdict "$ratio" 1 '<')")"
done
BM=$(m bmaptool-copy); DI=$(m dd-image)
row "3" "bmaptool copy → loop device; ferry disk image $(awk -v b="$IMG_BYTES" -v a="$IMG_ALLOC" 'BEGIN {printf "%.0f MiB, %.0f MiB allocated", b/1048576, a/1048576}')" "$(awk -v ms="$BM" 'BEGIN {printf "%.2f s", ms/1000}')$(cpu bmaptool-copy)" "$(runs_s "$R/bmaptool-copy.ms")" ""
row "3" "dd bs=4M oflag=direct conv=fsync, same image → same loop device" "$(awk -v ms="$DI" 'BEGIN {printf "%.2f s", ms/1000}')$(cpu dd-image)" "$(runs_s "$R/dd-image.ms")" ""
row "3" "bmaptool / dd time" "$(awk -v a="$BM" -v b="$DI" 'BEGIN {printf "%.2f", a/b}')" "" ""
if [ $FLASH_OK = 1 ]; then
    row "3" "ferry flash → same loop device" "$(awk -v ms="$(m ferry-flash)" 'BEGIN {printf "%.2f s", ms/1000}')" "$(runs_s "$R/ferry-flash.ms")" ""
else
    row "3" "ferry flash" "skipped" "" "\`ferry flash --help\` fails: no such command in this build"
fi
for p in "verify-small:ferry bundle verify, ${SMALL_MIB} MiB bundle" "ferry-verify:ferry bundle verify, ${SIZE_MIB} MiB bundle" \
    "install-small:ferry install, ${SMALL_MIB} MiB bundle (image file)" "ferry-file:ferry install, ${SIZE_MIB} MiB bundle (image file)" \
    "ferry-loop:ferry install, ${SIZE_MIB} MiB bundle (loop device)"; do
    k=${p%%:*}
    v=$(awk -v k="$(med "$R/$k.rss")" 'BEGIN {print k/1024}')
    row "4" "peak RSS: ${p#*:}" "$(rss_mib "$k")" "$(awk '{printf "%s%.1f", (NR>1?" / ":""), $1/1024}' "$R/$k.rss")" "(host build, glibc)"
done
for c in gzip zstd; do
    row "4" "RAUC service VmHWM during install ($c; counts the mmapped bundle's file pages)" \
        "$(awk -v k="$(med "$R/rauc-$c-loop.hwm")" 'BEGIN {printf "%.1f MiB", k/1024}')" \
        "$(awk '{printf "%s%.1f", (NR>1?" / ":""), $1/1024}' "$R/rauc-$c-loop.hwm")" "(context)"
done
if [ -n "$DEVX" ]; then
    for k in devx-verify devx-install; do
        v=$(awk -v k="$(med "$R/$k.rss")" 'BEGIN {print k/1024}')
        row "4" "**peak RSS, device build** (x86_64 musl twin of the aarch64 binary): ${k#devx-}, ${SIZE_MIB} MiB bundle" "**$(rss_mib "$k")**" "$(awk '{printf "%s%.1f", (NR>1?" / ":""), $1/1024}' "$R/$k.rss")" "$([ $k = devx-install ] && echo "< 10 MiB: $(verdict "$v" 10 '<')")"
    done
fi
row "4" "ferry daemon idle VmRSS after 2 s ($([ -n "$DEVX" ] && echo "device build" || echo "host build"); no [feed]; $DAEMON_THREADS threads)" "$(awk -v k="$DAEMON_RSS" 'BEGIN {printf "%.1f MiB", k/1024}')" "$(awk '{printf "%s%.1f", (NR>1?" / ":""), $1/1024}' "$RUN/res/daemon.rss")" "< 6 MiB: $(verdict "$(awk -v k="$DAEMON_RSS" 'BEGIN {print k/1024}')" 6 '<')"
row "5" "device binary, aarch64-unknown-linux-musl, --no-default-features, stripped" "$(awk -v b="$DEV_SIZE" 'BEGIN {printf "%.2f MiB", b/1048576}')" "$DEV_SIZE bytes" "< 5 MiB: $(verdict "$(awk -v b="$DEV_SIZE" 'BEGIN {print b/1048576}')" 5 '<')"
while IFS=$'\t' read -r stage val unit note; do
    row "6" "$stage, one thread ($note)" "$val $unit" "median of 5" ""
done <"$RUN/stages.tsv"

T_END=$(date +%s)
CPU=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/,"",$2); print $2; exit}')
echo
echo "ferry benchmarks, $(date -u +%Y-%m-%d), commit $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+dirty')"
echo "CPU: $CPU, $(nproc) cores; kernel $(uname -r); rootfs ${SIZE_MIB} MiB ext4 (ferry bundle ratio $RATIO, level 9, 1 MiB chunks); $ROUNDS interleaved rounds, medians; page cache dropped before every timed run."
echo "1-min load average at start of: ${LOADS[*]}; total $((T_END - T_START)) s."
echo "Other busy processes (lifetime %CPU > 30) at ${BUSY% }"
echo
echo "| # | measurement | median | runs (s, or MiB for RSS) | target |"
echo "|---|---|---|---|---|"
cat "$ROWS"
echo
echo "Commands run (in order, each once; \`timed\` ones ran after \`sync; echo 3 > /proc/sys/vm/drop_caches\` under \`/usr/bin/time -v\`):"
echo
echo '```'
awk '!seen[$0]++' "$CMDS"
echo '```'
