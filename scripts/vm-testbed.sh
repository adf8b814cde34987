#!/usr/bin/env bash
# Prepares this machine to run real VMs through libvirt for tapswitch's VM tests, without
# systemd: installs QEMU + libvirt (only what is missing), starts virtlogd and libvirtd in the
# background (their PIDs go to $RUN_DIR), and builds a tiny guest (Debian kernel + busybox
# initramfs) once into $CACHE_DIR. Idempotent; run as root.
#
#   scripts/vm-testbed.sh          set up (prints the guest's paths at the end)
#   scripts/vm-testbed.sh --stop   stop the daemons this script started, and only those
#
# The guest's /init reads its settings from the kernel command line:
#   tsw.ip=ADDR/PREFIX   address of eth0
#   tsw.peer=ADDR        ping this address until it answers (or tsw.ping_secs passes), then
#                        print "TSW-PING-OK ADDR" or "TSW-PING-FAIL ADDR" on the console
#   tsw.ping_secs=N      how long to try (default 60)
#   tsw.echo=PORT        TCP echo server on PORT (busybox nc)
# and prints "TSW-NET-UP ADDR MAC" on the console each time it configures eth0 (again after a
# NIC is hot-plugged).
set -euo pipefail

RUN_DIR=${TAPSWITCH_VM_RUN_DIR:-/run/tapswitch-vm}
CACHE_DIR=${TAPSWITCH_VM_CACHE_DIR:-/var/cache/tapswitch-vm}
# Bump when the guest's init or module list changes, so cached guests are rebuilt.
GUEST_VERSION=4
# virtio-net as modules, in dependency order (Debian's kernel builds none of them in).
GUEST_MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
  failover net_failover virtio_net)

[ "$(id -u)" -eq 0 ] || { echo "vm-testbed: run as root" >&2; exit 1; }

log() { echo "vm-testbed: $*"; }

# Whether PID is alive and runs PROGRAM (so a recycled PID is never mistaken for ours).
pid_runs() {
  local pid=$1 program=$2
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$program" ]
}

stop_daemons() {
  local name pid
  for name in libvirtd virtlogd; do
    [ -f "$RUN_DIR/$name.pid" ] || continue
    pid=$(cat "$RUN_DIR/$name.pid")
    if pid_runs "$pid" "$name"; then
      log "stopping $name (pid $pid)"
      kill -TERM "$pid"
      for _ in $(seq 50); do pid_runs "$pid" "$name" || break; sleep 0.1; done
      if pid_runs "$pid" "$name"; then kill -KILL "$pid"; fi
    fi
    rm -f "$RUN_DIR/$name.pid"
  done
}

if [ "${1:-}" = "--stop" ]; then
  stop_daemons
  exit 0
elif [ $# -gt 0 ]; then
  echo "usage: $0 [--stop]" >&2
  exit 2
fi

# --- packages --------------------------------------------------------------------------------
packages=(qemu-system-x86 libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
  busybox-static cpio xz-utils)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- libvirt configuration -------------------------------------------------------------------
# libvirtd refuses to start without the user its QEMU driver was built for, even when qemu.conf
# runs QEMU as root.
if ! getent passwd libvirt-qemu >/dev/null; then
  log "creating system user libvirt-qemu"
  useradd --system --user-group --no-create-home --shell /usr/sbin/nologin libvirt-qemu
fi

# QEMU runs as root without a security driver or cgroups: the tests hand it TAPs and macvtaps
# made by root and read console logs anywhere, and this machine has no systemd to delegate
# cgroups. The block is ours (between the markers) and rewritten in place. Without
# libvirt-daemon-system (systemd units we do not want) there is no qemu.conf at all.
QEMU_CONF=/etc/libvirt/qemu.conf
mkdir -p "$(dirname "$QEMU_CONF")"
touch "$QEMU_CONF"
MARK_BEGIN="# >>> tapswitch vm-testbed >>>"
MARK_END="# <<< tapswitch vm-testbed <<<"
wanted_block="$MARK_BEGIN
user = \"root\"
group = \"root\"
dynamic_ownership = 0
security_driver = \"none\"
cgroup_controllers = [ ]
$MARK_END"
current_block=$(sed -n "/^$MARK_BEGIN\$/,/^$MARK_END\$/p" "$QEMU_CONF" 2>/dev/null || true)
conf_changed=0
if [ "$current_block" != "$wanted_block" ]; then
  log "configuring $QEMU_CONF for root QEMU"
  sed -i "/^$MARK_BEGIN\$/,/^$MARK_END\$/d" "$QEMU_CONF"
  printf '%s\n' "$wanted_block" >>"$QEMU_CONF"
  conf_changed=1
fi

# --- daemons ---------------------------------------------------------------------------------
mkdir -p "$RUN_DIR"

# Starts DAEMON in the background unless one is already running, recording the PID only when
# we started it (so --stop never stops someone else's).
start_daemon() {
  local name=$1 pid
  pid=$(cat "$RUN_DIR/$name.pid" 2>/dev/null || true)
  if pid_runs "$pid" "$name"; then
    return 0
  fi
  rm -f "$RUN_DIR/$name.pid"
  if pgrep -x "$name" >/dev/null; then
    log "$name already running (not started by this script)"
    return 0
  fi
  log "starting $name"
  setsid "/usr/sbin/$name" >"$RUN_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/$name.pid"
}

if [ "$conf_changed" = 1 ]; then
  # A libvirtd we started earlier must re-read qemu.conf; someone else's is left alone.
  pid=$(cat "$RUN_DIR/libvirtd.pid" 2>/dev/null || true)
  if pid_runs "$pid" libvirtd; then
    log "restarting libvirtd (pid $pid) for the new qemu.conf"
    kill -TERM "$pid"
    for _ in $(seq 50); do pid_runs "$pid" libvirtd || break; sleep 0.1; done
  fi
fi
start_daemon virtlogd
start_daemon libvirtd
for _ in $(seq 100); do
  virsh -q -c qemu:///system version >/dev/null 2>&1 && break
  sleep 0.1
done
if ! virsh -q -c qemu:///system version >/dev/null 2>&1; then
  echo "vm-testbed: libvirtd does not answer on qemu:///system; its log:" >&2
  tail -n 20 "$RUN_DIR/libvirtd.log" >&2 || true
  exit 1
fi

# --- guest -----------------------------------------------------------------------------------
build_guest() {
  local work kernel_pkg deb modules_dir release root module file
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  kernel_pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$kernel_pkg" ] || { echo "vm-testbed: no linux-image-*-amd64 package known to apt" >&2; return 1; }
  # The package is kept, so a rebuild of the initramfs does not download ~70 MB again.
  mkdir -p "$CACHE_DIR/debs"
  deb=$(ls "$CACHE_DIR/debs/${kernel_pkg}_"*.deb 2>/dev/null | head -n 1 || true)
  if [ -z "$deb" ]; then
    log "downloading $kernel_pkg"
    # apt's sandbox user must be able to write the download directory.
    chmod 777 "$work"
    (cd "$work" && apt-get download -qq "$kernel_pkg" 2>/dev/null) \
      || { apt-get update -qq && (cd "$work" && apt-get download -qq "$kernel_pkg"); }
    rm -f "$CACHE_DIR"/debs/*.deb
    mv "$work"/linux-image-*.deb "$CACHE_DIR/debs/"
    deb=$(ls "$CACHE_DIR/debs/${kernel_pkg}_"*.deb)
  fi
  dpkg-deb -x "$deb" "$work/kernel"
  release=$(ls "$work/kernel/lib/modules")
  modules_dir="$work/kernel/lib/modules/$release"

  root="$work/initramfs"
  mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
  cp /bin/busybox "$root/bin/busybox"
  for module in "${GUEST_MODULES[@]}"; do
    file=$(find "$modules_dir" -name "$module.ko*" | head -n 1)
    [ -n "$file" ] || { echo "vm-testbed: module $module not in $kernel_pkg" >&2; return 1; }
    case "$file" in
      *.ko.xz) xz -dc "$file" >"$root/lib/modules/$module.ko" ;;
      *.ko) cp "$file" "$root/lib/modules/$module.ko" ;;
      *) echo "vm-testbed: cannot unpack $file" >&2; return 1 ;;
    esac
  done
  cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for module in ${GUEST_MODULES[*]}; do
  insmod /lib/modules/\$module.ko || echo "TSW-ERROR insmod \$module"
done
EOF
  cat >>"$root/init" <<'EOF'
ip=; peer=; echo_port=; ping_secs=60
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    tsw.ip=*) ip=${arg#tsw.ip=} ;;
    tsw.peer=*) peer=${arg#tsw.peer=} ;;
    tsw.echo=*) echo_port=${arg#tsw.echo=} ;;
    tsw.ping_secs=*) ping_secs=${arg#tsw.ping_secs=} ;;
  esac
done
ip link set lo up
configure_eth0() {
  if [ -z "$ip" ]; then
    echo "TSW-ERROR no tsw.ip= on the kernel command line"
  elif ! ip link set eth0 up || ! ip addr add "$ip" dev eth0; then
    echo "TSW-ERROR configuring eth0 with $ip"
  else
    echo "TSW-NET-UP $ip $(cat /sys/class/net/eth0/address)"
  fi
}
for _ in $(seq 50); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
configure_eth0
if [ -n "$echo_port" ]; then
  # -ll keeps listening after each connection; -e runs cat on every one of them.
  nc -ll -p "$echo_port" -e /bin/cat &
  echo "TSW-ECHO $echo_port"
fi
if [ -n "$peer" ]; then
  result=FAIL
  end=$(( $(date +%s) + ping_secs ))
  while [ "$(date +%s)" -lt "$end" ]; do
    if ping -c 1 -W 1 "$peer" >/dev/null 2>&1; then result=OK; break; fi
    sleep 0.2
  done
  echo "TSW-PING-$result $peer"
fi
# A NIC hot-plugged after an unplug comes up as a new, unconfigured eth0: configure it too.
while true; do
  if [ -n "$ip" ] && [ -e /sys/class/net/eth0 ] && ! ip addr show dev eth0 | grep -q "inet "; then
    configure_eth0
  fi
  sleep 0.5
done
EOF
  chmod 755 "$root/init"
  (cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$work/initrd.img"

  mkdir -p "$CACHE_DIR"
  cp "$work/kernel/boot/vmlinuz-$release" "$CACHE_DIR/vmlinuz"
  cp "$work/initrd.img" "$CACHE_DIR/initrd.img"
  echo "$GUEST_VERSION $kernel_pkg" >"$CACHE_DIR/version"
  log "guest built: $kernel_pkg, initramfs $(du -h "$CACHE_DIR/initrd.img" | cut -f1)"
}

if [ ! -f "$CACHE_DIR/vmlinuz" ] || [ ! -f "$CACHE_DIR/initrd.img" ] \
  || [ "$(cut -d' ' -f1 "$CACHE_DIR/version" 2>/dev/null)" != "$GUEST_VERSION" ]; then
  build_guest
fi

# Readable by every user: a test runs one domain's QEMU as libvirt-qemu (a per-domain
# <seclabel model='dac'>), which opens the kernel and initramfs itself.
chmod 0755 "$CACHE_DIR"
chmod 0644 "$CACHE_DIR/vmlinuz" "$CACHE_DIR/initrd.img"

# KVM only when it really boots the guest: on some hosts /dev/kvm exists but QEMU/KVM hangs or
# fails (nested or paravirtual hypervisors), so probe once with a real boot and remember.
probe_kvm() {
  [ -c /dev/kvm ] || return 1
  local out
  out=$(timeout 30 qemu-system-x86_64 -accel kvm -m 128 -display none -serial stdio -no-reboot \
    -nic none -kernel "$CACHE_DIR/vmlinuz" -initrd "$CACHE_DIR/initrd.img" \
    -append "console=ttyS0 quiet panic=-1" 2>/dev/null </dev/null || true)
  grep -q "TSW-ERROR no tsw.ip=" <<<"$out"
}
# The probe costs up to 30 s where KVM hangs; delete domain-type to probe again.
if [ ! -s "$CACHE_DIR/domain-type" ]; then
  if probe_kvm; then echo kvm; else echo qemu; fi >"$CACHE_DIR/domain-type"
fi
log "ready: kernel $CACHE_DIR/vmlinuz, initrd $CACHE_DIR/initrd.img, domain type $(cat "$CACHE_DIR/domain-type")"
