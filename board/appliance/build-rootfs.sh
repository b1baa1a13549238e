#!/usr/bin/env bash
# build-rootfs.sh OUTDIR --ferry BIN [--config FERRY_TOML] [--key PUB]... [--slots "K3S_A K3S_B"]
#                 [--release VERSION] [--net "IFACE ADDR/LEN GATEWAY"] [--overlay DIR]... [--disable SVC]...
#
# The root filesystem of ferry's reference appliance as a directory tree, made from Debian 12
# (bookworm) arm64 packages WITHOUT running any arm64 maintainer script (no emulation needed to
# build it; qemu-aarch64-static only lists busybox's applets and smoke-tests OpenRC):
#   - PID 1 is busybox init (/etc/inittab), which runs Debian's OpenRC the Alpine way:
#     `openrc sysinit`, `openrc boot`, `openrc default`; `openrc shutdown` at power-off/reboot.
#   - merged /usr (bin, sbin, lib -> usr/...), as Debian 12 has it;
#   - read-only: the initramfs mounts it ro. Everything written at run time goes to /run
#     (tmpfs), /tmp (tmpfs) or /data (the data partition): /var/log -> /data/log,
#     /var/lib/rancher -> /data/rancher, ferry's record in /data/ferry; /etc/hostname,
#     /etc/rancher and /etc/ferry/k3s.env are generated at boot by `ferry firstboot` under /run/ferry.
#   - the booted slot's k3s partition (from ferry.slot= on the kernel command line) is mounted
#     read-only on /opt/k3s; /usr/local/bin/k3s -> /opt/k3s/k3s.
# Options:
#   --ferry BIN      the aarch64 ferry binary (required)
#   --config FILE    /etc/ferry/ferry.toml (default: board/appliance/ferry.toml with OpenRC's reboot)
#   --key PUB        a trusted release key for /etc/ferry/keys (repeatable)
#   --slots "A B"    the block devices of slot A's and slot B's k3s partitions (default: /dev/vda4 /dev/vda7)
#   --board NAME, --disk DEV   board and disk in the default config (qemu-aarch64-virt, /dev/vda)
#   --data DEV       the data partition, mounted on /data (default: /dev/vda8)
#   --console TTY    the serial console that gets a root shell (default: ttyAMA0)
#   --release V      written to /etc/ferry-release
#   --net "..."      "eth0 dhcp" (the default) or a static "eth0 10.0.2.15/24 10.0.2.2"
#   --overlay DIR    copied over the tree last (your files: units, configs, tools); repeatable
#   --disable SVC    take SVC out of the default runlevel (repeatable)
# Env: DEB_CACHE (default ~/.cache/ferry/debs), SOURCE_DATE_EPOCH (default 1704067200).
# Idempotent and reproducible: OUTDIR is rebuilt from scratch, package versions come from apt's
# current bookworm lists (never hard-coded), extraction is sorted, every mtime is SOURCE_DATE_EPOCH.
set -euo pipefail

HERE=$(dirname "$(realpath "$0")")
OUT= FERRY= CONFIG= KEYS=() SLOTS="/dev/vda4 /dev/vda7" RELEASE= NET="eth0 dhcp"
BOARD=qemu-aarch64-virt DISK=/dev/vda DATA=/dev/vda8 CONSOLE=ttyAMA0
OVERLAYS=() DISABLE=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --ferry) FERRY=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --key) KEYS+=("$(realpath "$2")"); shift 2 ;;
    --slots) SLOTS=$2; shift 2 ;;
    --board) BOARD=$2; shift 2 ;;
    --disk) DISK=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --console) CONSOLE=$2; shift 2 ;;
    --release) RELEASE=$2; shift 2 ;;
    --net) NET=$2; shift 2 ;;
    --overlay) OVERLAYS+=("$(realpath "$2")"); shift 2 ;;
    --disable) DISABLE+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
    *) [[ -z $OUT ]] || { echo "one OUTDIR only" >&2; exit 2; }; OUT=$1; shift ;;
  esac
done
[[ -n $OUT && -n $FERRY ]] || { echo "usage: $0 OUTDIR --ferry BIN [options] (try --help)" >&2; exit 2; }
[[ -x $FERRY ]] || { echo "--ferry $FERRY: not an executable" >&2; exit 2; }
FERRY=$(realpath "$FERRY")
[[ -z $CONFIG ]] || CONFIG=$(realpath "$CONFIG")
read -r K3S_A K3S_B <<<"$SLOTS"
read -r NET_IF NET_ADDR NET_GW <<<"$NET"
OUT=$(realpath -m "$OUT")
[[ $OUT != / && -n $OUT ]] || { echo "refusing OUTDIR=$OUT" >&2; exit 2; }
CACHE=$(realpath -m "${DEB_CACHE:-$HOME/.cache/ferry/debs}")
APPLIANCE=$HERE                                 # the appliance's own OpenRC services
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1704067200}
QEMU=qemu-aarch64-static                        # only to list busybox applets / smoke test
ARCH=arm64 TRIPLET=aarch64-linux-gnu

# The roots of the closure. Everything else is what their Depends/Pre-Depends pull in.
ROOTS=(openrc busybox-static)
# Left out of the closure on purpose: needed only by maintainer scripts, which never run.
#   debconf: pulled by libpam0g (debconf | debconf-2.0) for its postinst; it is perl.
EXCLUDE=(debconf)

log() { printf '== %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------
# 1. Resolve the dependency closure with apt itself, as if on an empty arm64 system:
#    empty dpkg status, arm64 as the only architecture, no Recommends. apt uses this
#    host's bookworm lists (which already include arm64), so nothing is hard-coded.
#    No lock and no cache file are written (simulation only).
APTOPT=(-o Dir::State::status=/dev/null -o APT::Architecture=$ARCH -o "APT::Architectures::=$ARCH"
        -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Install-Recommends=false
        -o APT::Install-Suggests=false -o Debug::NoLocking=1 -q)
log "resolving the closure of ${ROOTS[*]}"
mapfile -t CLOSURE < <(apt-get "${APTOPT[@]}" -s install "${ROOTS[@]}" |
  sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) .*\[\([a-z0-9]*\)\])$/\1 \2 \3/p' | LC_ALL=C sort)
[[ ${#CLOSURE[@]} -gt 0 ]] || { echo "apt could not resolve ${ROOTS[*]} for $ARCH" >&2; exit 1; }

# 2. Download (verified by apt against the signed lists) what is not cached yet.
mkdir -p "$CACHE"
DEBS=() PKGLIST=()
for line in "${CLOSURE[@]}"; do
  read -r name ver arch <<<"$line"
  skip=0
  for x in "${EXCLUDE[@]}"; do [[ $name == "$x" ]] && skip=1; done
  [[ $skip == 1 ]] && { log "excluded: $name $ver"; continue; }
  f=$CACHE/${name}_${ver//:/%3a}_${arch}.deb
  if [[ ! -s $f ]]; then
    # apt-get download writes to the current dir; run it where root can write
    # (the "_apt sandbox" warning is harmless)
    (cd "$CACHE" && apt-get -q download "$name:$arch=$ver" 2>&1 | grep -v "unsandboxed" >&2 || true)
    [[ -s $f ]] || { echo "download of $name=$ver failed ($f)" >&2; exit 1; }
  fi
  DEBS+=("$f") PKGLIST+=("$name $ver $arch")
done

# ---------------------------------------------------------------------------------------
# 3. Extract into a merged-/usr skeleton. --keep-directory-symlink keeps bin/sbin/lib
#    as symlinks when a package ships ./bin/... (tar would replace them by directories).
log "extracting ${#DEBS[@]} packages into $OUT"
rm -rf "$OUT"
mkdir -p "$OUT"/usr/{bin,sbin,lib/$TRIPLET}
ln -s usr/bin "$OUT/bin"
ln -s usr/sbin "$OUT/sbin"
ln -s usr/lib "$OUT/lib"
for f in "${DEBS[@]}"; do
  dpkg-deb --fsys-tarfile "$f" | tar -x -C "$OUT" --keep-directory-symlink --no-same-permissions
done
# the same check debootstrap/mmdebstrap would do: the layout is still merged
for d in bin sbin lib; do [[ -L $OUT/$d ]] || { echo "$d is no longer a symlink" >&2; exit 1; }; done

# What a maintainer script or dpkg would have left, and what this appliance does not need.
rm -rf "$OUT"/usr/share/{doc,man,info,locale,lintian,bash-completion,zsh,initramfs-tools,bug,insserv} \
       "$OUT"/usr/lib/$TRIPLET/gconv "$OUT"/var/lib/update-rc.d
# Debian's OpenRC ships sysvinit glue and a few scripts we must not run:
#   rc, rcS     wrappers for sysvinit's inittab (busybox init calls openrc directly)
#   agetty      needs util-linux' agetty (busybox init respawns the console shell)
#   savecache   copies the deptree to /lib/rc/cache: the rootfs is read-only
rm -f "$OUT"/etc/init.d/{rc,rcS,agetty,savecache} "$OUT"/etc/runlevels/nonetwork/local
rm -rf "$OUT"/etc/runlevels/{nonetwork,recovery,off}   # runlevels busybox init never enters
rm -rf "$OUT"/lib/rc/tmp

# ---------------------------------------------------------------------------------------
# 4. busybox applets as symlinks (the rootfs is read-only: no `busybox --install` at boot).
#    Never overwrite a file a package ships (openrc's binaries win).
BB=$OUT/usr/bin/busybox
[[ -x $BB ]] || { echo "no busybox in $OUT/usr/bin" >&2; exit 1; }
napplets=0
while read -r p; do
  case $p in
    bin/*|usr/bin/*) d=usr/bin t=busybox ;;
    sbin/*|usr/sbin/*) d=usr/sbin t=../bin/busybox ;;
    *) continue ;;
  esac
  n=${p##*/}
  [[ -e $OUT/$d/$n || -L $OUT/$d/$n ]] && continue
  ln -s "$t" "$OUT/$d/$n"
  napplets=$((napplets + 1))
done < <("$QEMU" "$BB" --list-full)
for a in init sh mount ip start-stop-daemon md5sum poweroff; do
  [[ -e $OUT/bin/$a || -e $OUT/sbin/$a ]] || { echo "busybox has no $a applet" >&2; exit 1; }
done
log "$napplets busybox applets linked"

# ---------------------------------------------------------------------------------------
# 5. The skeleton of an immutable system.
cd "$OUT"
mkdir -p dev proc sys run tmp data root mnt etc/{conf.d,local.d,ferry/keys} usr/local/bin \
         var/lib etc/runlevels/{sysinit,boot,default,shutdown}
chmod 1777 tmp
chmod 0700 root
ln -s /run var/run
ln -s /run/lock var/lock
ln -s /tmp var/tmp
ln -s /data/log var/log                 # created at boot by localmount
ln -s /data/rancher var/lib/rancher     # idem
# generated at boot by `ferry firstboot --root /run/ferry` (ferry-firstboot service)
ln -s /run/ferry/etc/hostname etc/hostname
ln -s /run/ferry/etc/rancher etc/rancher
ln -s /run/ferry/etc/ferry/k3s.env etc/ferry/k3s.env
ln -s /proc/self/mounts etc/mtab

# No base-passwd/base-files: a minimal passwd/group. Gotcha: OpenRC's init.sh runs
# `checkpath -o root:uucp /run/lock`, so the group uucp must exist.
cat > etc/passwd <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat > etc/group <<'EOF'
root:x:0:
daemon:x:1:
tty:x:5:
disk:x:6:
uucp:x:10:
shadow:x:42:
utmp:x:43:
nogroup:x:65534:
EOF
printf 'root:*:19000:0:99999:7:::\n' > etc/shadow
chmod 0640 etc/shadow
printf '/bin/sh\n' > etc/shells
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > etc/hosts
ln -s /run/resolv.conf etc/resolv.conf   # written by the network service (DHCP or static)
cat > etc/profile <<'EOF'
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PS1='\h# '
EOF

# /data (ext4, writable) and /tmp; /run is mounted by OpenRC's init.sh (tmpfs).
cat > etc/fstab <<EOF
# <fs>     <mountpoint> <type> <options>                       <dump> <pass>
$DATA  /data        ext4   rw,noatime,nodev,nosuid          0      0
tmpfs      /tmp         tmpfs  rw,nosuid,nodev,mode=1777        0      0
EOF

# ---------------------------------------------------------------------------------------
# 6. busybox init runs OpenRC (the Alpine model).
cat > etc/inittab <<EOF
# /etc/inittab for busybox init: OpenRC does the work.
::sysinit:/sbin/openrc sysinit
::sysinit:/sbin/openrc boot
::wait:/sbin/openrc default

# a root shell on the serial console (login shell: reads /etc/profile)
$CONSOLE::respawn:-/bin/sh

::ctrlaltdel:/sbin/reboot
# busybox poweroff/reboot signal init, which runs this, then kills everything left
::shutdown:/sbin/openrc shutdown
EOF

# Debian's rc.conf replaced by ours.
cat > etc/rc.conf <<'EOF'
# /etc/rc.conf: OpenRC on a read-only root with busybox init.
rc_parallel="NO"
rc_interactive="NO"          # no "press I" prompt on the console
rc_shell=/bin/sh
rc_depend_strict="YES"
rc_logger="NO"               # rc.log would be /var/log = /data/log, not mounted yet
rc_sys=""                    # plain VM/board: no container keywords
unicode="YES"
rc_cgroup_mode="unified"     # cgroup v2 only (what k3s wants)
rc_loopsolver_enable="YES"
rc_loopsolver_warnings="YES"
EOF

# ---------------------------------------------------------------------------------------
# 7. OpenRC services. Debian's openrc ships no sysfs/devfs/localmount/local/hostname
#    (Debian gets those from initscripts' LSB scripts), so they are provided here.
svc() { install -m 0755 /dev/stdin "etc/init.d/$1"; }

# One sysinit service for the kernel filesystems (each OpenRC service costs about 1 s of
# openrc-run/sh/helper execs under TCG, so fewer, bigger services boot faster).
svc kernfs <<'EOF'
#!/sbin/openrc-run
description="Mount /sys (the initramfs unmounted it), /dev/pts, /dev/shm; /dev fd links."
depend() { before cgroups; keyword -prefix -vserver -lxc -docker; }
start() {
	ebegin "Mounting kernel filesystems"
	mountinfo -q /sys || mount -n -t sysfs -o nodev,noexec,nosuid sysfs /sys || return 1
	# /dev is the initramfs' devtmpfs, moved; mount one if that did not happen
	mountinfo -q /dev || mount -n -t devtmpfs -o mode=0755,nosuid devtmpfs /dev || return 1
	mkdir -p /dev/pts /dev/shm
	mountinfo -q /dev/pts || mount -n -t devpts -o gid=5,mode=0620,noexec,nosuid devpts /dev/pts
	mountinfo -q /dev/shm || mount -n -t tmpfs -o mode=1777,nodev,noexec,nosuid shm /dev/shm
	[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
	[ -e /dev/stdin ] || ln -s fd/0 /dev/stdin
	[ -e /dev/stdout ] || ln -s fd/1 /dev/stdout
	[ -e /dev/stderr ] || ln -s fd/2 /dev/stderr
	eend 0
}
EOF

svc localmount <<'EOF'
#!/sbin/openrc-run
description="Mount /tmp and the data partition (/data), create the dirs /var points to."
depend() { need kernfs; keyword -prefix -vserver -lxc -docker; }
start() {
	ebegin "Mounting local filesystems"
	mount -a -t tmpfs,ext4
	eend $? || return 1
	if mountinfo -q /data; then
		# /var/log -> /data/log, /var/lib/rancher -> /data/rancher
		checkpath -d -m 0755 /data/log /data/rancher
	else
		ewarn "/data is not mounted: /var/log and /var/lib/rancher are dangling"
	fi
	# the booted slot's k3s payload (its partitions: /etc/ferry/slots)
	local arg slot= dev
	for arg in $(cat /proc/cmdline); do
		case $arg in ferry.slot=*) slot=${arg#ferry.slot=} ;; esac
	done
	. /etc/ferry/slots
	case $slot in a) dev=$K3S_A ;; b) dev=$K3S_B ;; *) eerror "no ferry.slot=a|b on the kernel command line"; return 1 ;; esac
	ebegin "Mounting slot $slot's k3s ($dev) on /opt/k3s"
	mountinfo -q /opt/k3s || mount -t ext4 -o ro "$dev" /opt/k3s
	eend $?
}
stop() {
	ebegin "Unmounting /data"
	sync
	mountinfo -q /data && { umount /data || mount -o remount,ro /data; }
	eend $?
	mountinfo -q /opt/k3s && umount /opt/k3s
	return 0
}
EOF

svc hostname <<'EOF'
#!/sbin/openrc-run
description="A default hostname (ferry-firstboot sets the provisioned one)."
start() {
	local h=localhost
	[ -r /etc/hostname ] && read -r h < /etc/hostname
	ebegin "Setting hostname to $h"
	hostname "$h"
	eend $?
}
EOF

svc network <<'EOF'
#!/sbin/openrc-run
description="Network (/etc/conf.d/network): lo and one interface, DHCP (busybox udhcpc) or static."
depend() { provide net; after localmount; }
start() {
	ip link set lo up && ip link set "$iface" up || return 1
	if [ "$address" = dhcp ]; then
		ebegin "Configuring $iface by DHCP"
		# up to ten seconds for a first lease (-t 5 -T 2), then it keeps trying and
		# renewing in the background (-b)
		udhcpc -i "$iface" -b -t 5 -T 2 -p "/run/udhcpc.$iface.pid" -s /usr/share/udhcpc/default.script
		eend $?
	else
		ebegin "Configuring $iface $address via $gateway"
		ip addr add "$address" dev "$iface" &&
		ip route add default via "$gateway" &&
		printf 'nameserver %s\n' ${dns:-$gateway} > /run/resolv.conf
		eend $?
	fi
}
stop() {
	ebegin "Stopping $iface"
	[ -f /run/udhcpc.$iface.pid ] && kill "$(cat /run/udhcpc.$iface.pid)" 2>/dev/null
	ip addr flush dev "$iface"
	ip link set "$iface" down
	eend 0
}
EOF

# udhcpc's lease script: address, default route and DNS (/etc/resolv.conf -> /run/resolv.conf)
mkdir -p usr/share/udhcpc
install -m 0755 /dev/stdin usr/share/udhcpc/default.script <<'EOF'
#!/bin/sh
case $1 in
	deconfig)
		ip addr flush dev "$interface"
		ip link set "$interface" up ;;
	bound|renew)
		ip addr flush dev "$interface"
		ip addr add "$ip/${mask:-24}" dev "$interface"
		if [ -n "$router" ]; then
			ip route del default dev "$interface" 2>/dev/null
			for r in $router; do ip route add default via "$r" dev "$interface"; break; done
		fi
		{ [ -n "$domain" ] && echo "search $domain"; for d in $dns; do echo "nameserver $d"; done; } > /run/resolv.conf
		echo "udhcpc: $interface $ip/${mask:-24} via ${router:-none}" > /dev/console ;;
esac
exit 0
EOF

svc local <<'EOF'
#!/sbin/openrc-run
description="Run /etc/local.d/*.start (last in the default runlevel)."
depend() { after *; keyword -timeout; }
start() {
	local f
	for f in /etc/local.d/*.start; do
		[ -x "$f" ] && "$f"
	done
	return 0
}
EOF

# the appliance's own services, unchanged
for s in ferry ferry-check ferry-firstboot k3s; do
  install -m 0755 "$APPLIANCE/openrc/$s" "etc/init.d/$s"
done

# boot-to-ready: printed when the default runlevel is done
cat > etc/local.d/ready.start <<'EOF'
#!/bin/sh
read -r up _ < /proc/uptime
echo "ferry appliance: ready ${up}s after the kernel started ($(cat /etc/ferry-release 2>/dev/null))" > /dev/console
exit 0
EOF
chmod 0755 etc/local.d/ready.start

# Runlevels (what `rc-update add` would do, done by hand: no maintainer scripts).
rl() { local lvl=$1 s; shift; for s; do
  [[ -x etc/init.d/$s ]] || { echo "no service $s" >&2; exit 1; }
  ln -s "/etc/init.d/$s" "etc/runlevels/$lvl/$s"; done; }
rl sysinit kernfs cgroups
rl boot localmount hostname
rl default ferry-firstboot network k3s ferry-check ferry local
# shutdown: empty, so `openrc shutdown` stops everything (localmount last: /data)

# ---------------------------------------------------------------------------------------
# 8. ferry, its keys and config; k3s comes from the booted slot's k3s partition.
install -m 0755 "$FERRY" usr/bin/ferry
for k in "${KEYS[@]}"; do install -m 0644 "$k" "etc/ferry/keys/${k##*/}"; done
if [[ -n $CONFIG ]]; then
  install -m 0644 "$CONFIG" etc/ferry/ferry.toml
else
  # the reference config, with the reboot through OpenRC (busybox reboot: init runs `openrc shutdown`)
  sed -e 's|^reboot_command = .*|reboot_command = ["/sbin/reboot"]|' \
    -e "s|^board = .*|board = \"$BOARD\"|" -e "s|^disk = .*|disk = \"$DISK\"|" \
    "$APPLIANCE/ferry.toml" > etc/ferry/ferry.toml
fi
# no colour codes on the serial console (ferry's services log there, or to /data/log)
for s in ferry ferry-check ferry-firstboot; do echo 'export NO_COLOR=1' > "etc/conf.d/$s"; done
printf 'K3S_A=%s\nK3S_B=%s\n' "$K3S_A" "$K3S_B" > etc/ferry/slots
printf 'iface=%s\naddress=%s\ngateway=%s\n' "$NET_IF" "$NET_ADDR" "$NET_GW" > etc/conf.d/network
mkdir -p opt/k3s
ln -s /opt/k3s/k3s usr/local/bin/k3s
[[ -z $RELEASE ]] || echo "$RELEASE" > etc/ferry-release
for d in "${DISABLE[@]}"; do
  [[ -L etc/runlevels/default/$d ]] || { echo "--disable $d: not in the default runlevel" >&2; exit 1; }
  rm "etc/runlevels/default/$d"
done
for o in "${OVERLAYS[@]}"; do cp -a "$o/." .; done

# record what went in
printf '%s\n' "${PKGLIST[@]}" > etc/appliance-packages

# ---------------------------------------------------------------------------------------
# 9. Smoke test with user-mode emulation (no binfmt needed): the loader and the
#    libraries of the merged /usr are found.
# (it prints "[DOCKER]" or the like: rc_sys detected on the build host, not the board)
"$QEMU" -L "$OUT" "$OUT/sbin/openrc" --version >&2
"$QEMU" -L "$OUT" "$OUT/bin/rc-status" --version >&2

# Fixed mtimes (reproducible trees and images).
find "$OUT" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
log "done: $OUT ($(du -sh "$OUT" | cut -f1))"
printf '%s\n' "${PKGLIST[@]}"
