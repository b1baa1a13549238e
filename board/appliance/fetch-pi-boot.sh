#!/usr/bin/env bash
# fetch-pi-boot.sh CACHE_DIR OUT_DIR
# The Raspberry Pi's boot-partition files from Debian 12, versions resolved by apt:
#   raspi-firmware (component non-free-firmware): start4.elf fixup4.dat (Pi 4; its
#     second stage is in the EEPROM), bootcode.bin start.elf fixup.dat (Pi 3), and the
#     firmware's licence as LICENCE.broadcom
#   u-boot-rpi (arm64): rpi_arm64/u-boot.bin (one U-Boot for the Pi 3 and 4)
# Adds a sources entry of its own for non-free-firmware when apt has none (the suites
# and mirror of the host's Debian entry). Debs are cached in CACHE_DIR.
set -euo pipefail

[[ $# -eq 2 ]] || { echo "usage: $0 CACHE_DIR OUT_DIR" >&2; exit 2; }
mkdir -p "$1" "$2"
CACHE=$(realpath "$1")
OUT=$(realpath "$2")

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  apt-get update -q
fi
if [[ -z $(apt-cache policy raspi-firmware 2>/dev/null | awk '/Candidate:/ {print $2}' | grep -v '(none)') ]]; then
  mirror=$(sed -n 's/^URIs:[[:space:]]*\(.*\/debian\)\/\{0,1\}$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
  [[ -n $mirror ]] || mirror=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\([^[:space:]]*\/debian\)\/\{0,1\}[[:space:]].*/\2/p' /etc/apt/sources.list 2>/dev/null | head -n1)
  [[ -n $mirror ]] || mirror=http://deb.debian.org/debian
  echo "adding /etc/apt/sources.list.d/ferry-non-free-firmware.sources ($mirror)" >&2
  cat > /etc/apt/sources.list.d/ferry-non-free-firmware.sources <<SRC
# added by ferry's board/appliance/fetch-pi-boot.sh: Raspberry Pi firmware (raspi-firmware)
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -q
fi

fetch() { # fetch PKG ARCH -> the .deb's path (downloaded once, verified by apt)
  local deb spec=$1:$2
  [[ $2 != all ]] || spec=$1
  deb=$(find "$CACHE" -maxdepth 1 -name "${1}_$(apt-cache policy "$spec" | awk '/Candidate:/ {gsub(/^[0-9]+:/, "", $2); print $2}')_$2.deb" | head -n1)
  if [[ -z $deb ]]; then
    (cd "$CACHE" && apt-get download -q "$spec" >&2)
    deb=$(find "$CACHE" -maxdepth 1 -name "${1}_*_$2.deb" | sort | tail -n1)
  fi
  [[ -n $deb ]] || { echo "cannot download $1:$2" >&2; exit 1; }
  echo "$deb"
}
FW=$(fetch raspi-firmware all)
UB=$(fetch u-boot-rpi arm64)
X=$(mktemp -d "$CACHE/pi-boot.XXXXXX")
trap 'rm -rf "$X"' EXIT
dpkg-deb -x "$FW" "$X/fw"
dpkg-deb -x "$UB" "$X/ub"
rm -f "$OUT"/*
for f in start4.elf fixup4.dat bootcode.bin start.elf fixup.dat; do
  install -m 0644 "$X/fw/usr/lib/raspi-firmware/$f" "$OUT/$f"
done
install -m 0644 "$X/fw/usr/share/doc/raspi-firmware/copyright" "$OUT/LICENCE.broadcom"
install -m 0644 "$X/ub/usr/lib/u-boot/rpi_arm64/u-boot.bin" "$OUT/u-boot.bin"
echo "$(basename "$FW") $(basename "$UB"): $(cd "$OUT" && ls | tr '\n' ' ')"
