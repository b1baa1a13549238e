# Sourced by run.sh and sd-class.sh: RAUC 1.8 on a private D-Bus system bus,
# as ../shared/peer-tools.md says it runs on this kind of machine.

# rauc_setup DIR CERT SLOT_A SLOT_B: DIR/system.conf (bootloader=noop, raw
# slots) and a bus for it; exports DBUS_SYSTEM_BUS_ADDRESS, sets DBUS_PID.
rauc_setup() {
  local dir=$1 cert=$2 a=$3 b=$4
  mkdir -p "$dir/mnt" "$dir/data"
  cat >"$dir/system.conf" <<CONF
[system]
compatible=ferry-bench
bootloader=noop
mountprefix=$dir/mnt
data-directory=$dir/data

[keyring]
path=$cert

[slot.rootfs.0]
device=$a
type=raw
bootname=A

[slot.rootfs.1]
device=$b
type=raw
bootname=B
install-same=true
CONF
  # without receive_sender every install fails with "Error creating proxy"
  cat >"$dir/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$dir/bus.sock</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/><allow send_destination="*"/>
    <allow send_type="method_call"/><allow receive_sender="*"/>
  </policy>
</busconfig>
CONF
  dbus-daemon --config-file="$dir/bus.conf" --fork --print-pid=3 3>"$dir/dbus.pid"
  DBUS_PID=$(cat "$dir/dbus.pid")
  export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$dir/bus.sock"
}

# rauc_wait: until `rauc service` owns its bus name (10 s at most)
rauc_wait() {
  local _
  for _ in $(seq 100); do
    dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
      org.freedesktop.DBus.NameHasOwner string:de.pengutronix.rauc 2>/dev/null | grep -q "boolean true" && return 0
    sleep 0.1
  done
  echo "rauc service did not come up" >&2
  return 1
}
