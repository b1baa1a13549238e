# ferry A/B boot script for the Raspberry Pi 4 (and 3) with Debian's U-Boot
# (u-boot-rpi 2023.01, rpi_arm64, hush), loaded by the Pi firmware from partition 1.
# Build: mkimage -A arm64 -T script -C none -d boot.cmd boot.scr (ferry image build does)
#
# Disk (GPT, mmc 0 = the SD card): 1 boot (FAT: firmware, config.txt, u-boot.bin,
# boot.scr, ferry.env), 2 kernel_a, 3 rootfs_a, 4 k3s_a, 5 kernel_b, 6 rootfs_b,
# 7 k3s_b, 8 data. A kernel partition is ext4: /Image, /initrd.img, /dtbs/broadcom/*.dtb.
# Boot state: file ferry.env on partition 1, 0x4000 bytes (U-Boot's own CONFIG_ENV_SIZE:
# CRC32 LE + NUL-separated
# vars, no flag byte), shared with ferry / fw_setenv. Variables:
#   BOOT_ORDER   bootable slots, preferred first ("A", "A B", "B A", ...)
#   FERRY_TRIAL  "" or the slot under trial ("A"/"B")
#   BOOT_A_LEFT, BOOT_B_LEFT  remaining tries of a trial slot (0-9; U-Boot reads hex)
# A trial slot costs one try per boot (written back before booting) and is skipped
# at 0. A committed (non-trial) slot is booted without touching any counter.
# If a slot's kernel/initrd fails to load, the next slot in BOOT_ORDER is tried.
# Hush quirk: no single quotes inside "...": they stop ${var} expansion there.

# Scratch RAM for the env file: free on the Pi between scriptaddr (0x02400000)
# and fdt_addr_r (0x02600000).
setenv ferry_envaddr 0x02500000
setenv ferry_vars "BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT FERRY_TRIAL"
setenv BOOT_A_LEFT
setenv BOOT_B_LEFT
setenv FERRY_TRIAL
setenv BOOT_ORDER

# ferry writes ferry.env.redund first, then ferry.env: a torn write leaves one intact copy.
if fatload mmc 0:1 ${ferry_envaddr} ferry.env && env import -c ${ferry_envaddr} ${filesize} ${ferry_vars}; then
  echo "ferry: ferry.env: BOOT_ORDER=${BOOT_ORDER} FERRY_TRIAL=${FERRY_TRIAL} BOOT_A_LEFT=${BOOT_A_LEFT} BOOT_B_LEFT=${BOOT_B_LEFT}"
elif fatload mmc 0:1 ${ferry_envaddr} ferry.env.redund && env import -c ${ferry_envaddr} ${filesize} ${ferry_vars}; then
  echo "ferry: ferry.env bad, using ferry.env.redund: BOOT_ORDER=${BOOT_ORDER} FERRY_TRIAL=${FERRY_TRIAL}"
else
  echo "ferry: ferry.env and ferry.env.redund missing or bad: using BOOT_ORDER=A, no trial"
  setenv BOOT_ORDER A
  setenv FERRY_TRIAL
fi

for S in ${BOOT_ORDER}; do
  setenv ferry_go 0
  if test "${S}" = A; then
    setenv ferry_left ${BOOT_A_LEFT}
    setenv ferry_kpart 2
    setenv ferry_slot a
  elif test "${S}" = B; then
    setenv ferry_left ${BOOT_B_LEFT}
    setenv ferry_kpart 5
    setenv ferry_slot b
  else
    echo "ferry: ignoring unknown slot ${S} in BOOT_ORDER"
    setenv ferry_slot
  fi

  if test -n "${ferry_slot}"; then
    if test "${S}" != "${FERRY_TRIAL}"; then
      # committed slot: never depends on (or touches) a counter
      setenv ferry_go 1
    elif test -z "${ferry_left}"; then
      echo "ferry: trial slot ${S}: no tries left (counter unset), skipping"
    elif itest ${ferry_left} -gt 0; then
      setexpr ferry_left ${ferry_left} - 1
      setenv BOOT_${S}_LEFT ${ferry_left}
      # persist the decrement BEFORE booting; no -s (CRC must cover 0x4000 bytes)
      # both copies, the backup first (as ferry does), so either read sees the decrement
      if env export -c ${ferry_envaddr} ${ferry_vars} && fatwrite mmc 0:1 ${ferry_envaddr} ferry.env.redund ${filesize} && fatwrite mmc 0:1 ${ferry_envaddr} ferry.env ${filesize}; then
        echo "ferry: trial slot ${S}: ${ferry_left} tries left after this one"
        setenv ferry_go 1
      else
        echo "ferry: trial slot ${S}: cannot write ferry.env, skipping"
      fi
    else
      echo "ferry: trial slot ${S}: no tries left, skipping"
    fi
  fi

  if test "${ferry_go}" = 1; then
    echo "ferry: booting slot ${S}"
    # the slot's own device tree for this model (U-Boot sets fdtfile from the
    # board revision), else the one the firmware loaded
    setenv ferry_fdt ${fdt_addr}
    if ext4load mmc 0:${ferry_kpart} ${fdt_addr_r} /dtbs/${fdtfile}; then
      setenv ferry_fdt ${fdt_addr_r}
    else
      echo "ferry: slot ${S} has no /dtbs/${fdtfile}: using the device tree the firmware loaded"
    fi
    if ext4load mmc 0:${ferry_kpart} ${kernel_addr_r} /Image; then
      if ext4load mmc 0:${ferry_kpart} ${ramdisk_addr_r} /initrd.img; then
        # the rootfs by its GPT name: the card may be mmcblk0 or mmcblk1
        setenv bootargs "console=tty1 console=ttyS1,115200 panic=3 ferry.slot=${ferry_slot} ferry.root=PARTLABEL=rootfs_${ferry_slot}"
        booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${ferry_fdt}
      fi
    fi
    echo "ferry: slot ${S} failed to load or boot, trying the next one"
  fi
done

# (this U-Boot has no poweroff: the script ends and U-Boot's own boot order goes on)
echo "ferry: FATAL: no bootable slot (BOOT_ORDER=${BOOT_ORDER} FERRY_TRIAL=${FERRY_TRIAL})"
