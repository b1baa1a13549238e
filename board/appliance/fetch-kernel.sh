#!/usr/bin/env bash
# fetch-kernel.sh CACHE_DIR OUT_DIR [--flavour F] [--modules "M ..."] [--dtbs "D ..."]
# Downloads a Debian 12 arm64 kernel (the metapackage linux-image-F-arm64 resolved to
# its versioned package, never a hard-coded ABI) + busybox-static (arm64) into CACHE_DIR
# and extracts into OUT_DIR: Image, busybox, modules/*.ko + modules/load-order (the
# modules asked for and their dependencies, dependencies first), and with --dtbs the
# device trees under dtbs/ (paths as in the package, e.g. broadcom/bcm2711-rpi-4-b.dtb).
#   --flavour cloud (default; QEMU virt: virtio only) or "" (the generic arm64 kernel:
#             real boards, e.g. the Raspberry Pi)
#   --modules the modules the initramfs loads (default: the QEMU virt board's);
#             --extra-modules adds to them (after --modules)
# Idempotent: debs are reused, extraction is skipped when OUT_DIR is up to date.
set -euo pipefail

[[ $# -ge 2 ]] || { echo "usage: $0 CACHE_DIR OUT_DIR [--flavour F] [--modules \"M ...\"] [--dtbs \"D ...\"]" >&2; exit 2; }
mkdir -p "$1" "$2"
CACHE=$(realpath "$1")
OUT=$(realpath "$2")
shift 2
FLAVOUR=cloud
# Modules the test board needs (virtio_mmio: virtio-blk-device; virtio_pci: virtio-net-pci).
WANT=(virtio_mmio virtio_pci virtio_blk virtio_net vfat nls_cp437 nls_iso8859_1 nls_ascii)
DTBS=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --flavour) FLAVOUR=$2; shift 2 ;;
    --modules) read -r -a WANT <<<"$(tr "\n" " " <<<"$2")"; shift 2 ;;
    --dtbs) read -r -a DTBS <<<"$(tr "\n" " " <<<"$2")"; shift 2 ;;
    --extra-modules) read -r -a MORE <<<"$2"; WANT+=("${MORE[@]}"); shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
META=linux-image-${FLAVOUR:+$FLAVOUR-}arm64

# 1. apt: arm64 architecture and package lists, only when missing.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
fi
if ! apt-cache show "$META:arm64" >/dev/null 2>&1; then
  apt-get update -q
fi

# 2. Resolve the versioned kernel package (never hard-code the ABI number).
KPKG=$(apt-cache depends "$META:arm64" |
  awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { sub(/:arm64$/, "", $2); print $2; exit }')
[[ -n $KPKG ]] || { echo "cannot resolve kernel package" >&2; exit 1; }

# 3. Download (reuse debs already in CACHE).
fetch() { # fetch PKG -> prints path of the .deb
  local deb
  deb=$(find "$CACHE" -maxdepth 1 -name "${1}_*_arm64.deb" | sort | tail -n1)
  if [[ -z $deb ]]; then
    (cd "$CACHE" && apt-get download -q "$1:arm64" >&2)
    deb=$(find "$CACHE" -maxdepth 1 -name "${1}_*_arm64.deb" | sort | tail -n1)
  fi
  echo "$deb"
}
KDEB=$(fetch "$KPKG")
BDEB=$(fetch busybox-static)
STAMP="$(basename "$KDEB") $(basename "$BDEB") ${WANT[*]} dtbs: ${DTBS[*]}"
if [[ -f $OUT/.stamp && $(cat "$OUT/.stamp") == "$STAMP" ]]; then
  echo "up to date: $OUT ($KPKG)"; exit 0
fi

# 4. Extract kernel + modules (only boot/ and lib/modules/) to a scratch dir.
X=$(mktemp -d "$CACHE/extract.XXXXXX")
trap 'rm -rf "$X"' EXIT
dpkg-deb --fsys-tarfile "$KDEB" | tar -x -C "$X" --wildcards './boot/vmlinuz-*' './lib/modules/*' \
  ${DTBS[@]:+'./usr/lib/linux-image-*'}
dpkg-deb --fsys-tarfile "$BDEB" | tar -x -C "$X" ./bin/busybox
install -m 0755 "$X/bin/busybox" "$OUT/busybox"

VMLINUZ=$(echo "$X"/boot/vmlinuz-*)
KVER=${VMLINUZ##*/vmlinuz-}
# Debian's arm64 vmlinuz is normally a plain Image ("ARMd" magic at 0x38); gunzip if not.
if [[ $(dd if="$VMLINUZ" bs=1 skip=56 count=4 status=none) == $'ARM\x64' ]]; then
  cp "$VMLINUZ" "$OUT/Image"
else
  zcat "$VMLINUZ" > "$OUT/Image"
fi

# 5. Modules: index name -> file (names normalised to '_'), then depth-first on depends=.
MODDIR=$X/lib/modules/$KVER
declare -A PATHS=() SEEN=()
while IFS= read -r f; do
  n=${f##*/}; n=${n%%.ko*}; PATHS[${n//-/_}]=$f
done < <(find "$MODDIR" -name '*.ko*')
ORDER=()
add() { # add MODULE: its dependencies first, then itself
  local m=${1//-/_} dep deps
  [[ -n ${SEEN[$m]:-} ]] && return 0
  SEEN[$m]=1
  if [[ -z ${PATHS[$m]:-} ]]; then
    if grep -q "/${m}.ko\$\|/${m//_/-}.ko\$" "$MODDIR/modules.builtin"; then return 0; fi
    echo "module $m: not found and not built in" >&2; exit 1
  fi
  deps=$(modinfo -F depends "${PATHS[$m]}")
  for dep in ${deps//,/ }; do add "$dep"; done
  ORDER+=("$m")
}
for m in "${WANT[@]}"; do add "$m"; done

rm -rf "$OUT/modules"; mkdir -p "$OUT/modules"
for m in "${ORDER[@]}"; do
  f=${PATHS[$m]}
  case $f in
    *.xz) xz -dc "$f" ;;
    *.zst) zstd -qdc "$f" ;;
    *) cat "$f" ;;
  esac > "$OUT/modules/$m.ko"
  echo "$m.ko" >> "$OUT/modules/load-order"
done
rm -rf "$OUT/dtbs"
for d in "${DTBS[@]}"; do
  install -D -m 0644 "$X/usr/lib/linux-image-$KVER/$d" "$OUT/dtbs/$d"
done
echo "$KVER" > "$OUT/kernel-version"
echo "$STAMP" > "$OUT/.stamp"
echo "extracted $KPKG ($KVER) to $OUT: Image busybox modules: ${ORDER[*]}"
