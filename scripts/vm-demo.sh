#!/usr/bin/env bash
# Two libvirt guests talking through tapswitch, as Nova would plug them: the
# switch creates each VM port (its own TAP plus a passthru macvtap for QEMU)
# before the domain exists, `tapswitch libvirt-xml` gives the <interface>
# element, libvirt starts the guests, and they ping each other and a network
# namespace on the same switch. Everything made here is removed at exit; the
# libvirt daemons started by scripts/vm-testbed.sh keep running
# (`scripts/vm-testbed.sh --stop` stops them). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }

bash scripts/install-deps.sh
bash scripts/vm-testbed.sh
cargo build --release --locked --bin tapswitch
tapswitch=target/release/tapswitch

cache=${TAPSWITCH_VM_CACHE_DIR:-/var/cache/tapswitch-vm}
domain_type=$(cat "$cache/domain-type")
tag=$$
work=$(mktemp -d "/tmp/tsvmdemo-$tag.XXXX")
sock="$work/ctl.sock"
ns="tsvd-$tag"
guests=("tsvd-$tag-a" "tsvd-$tag-b")
switch_pid=

cleanup() {
  for guest in "${guests[@]}"; do
    virsh -q -c qemu:///system destroy "$guest" >/dev/null 2>&1 || true
  done
  if [ -n "$switch_pid" ]; then
    kill "$switch_pid" 2>/dev/null || true
    wait "$switch_pid" 2>/dev/null || true
  fi
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ctl() { "$tapswitch" --control "$sock" "$@"; }

ip netns add "$ns"
"$tapswitch" --control "$sock" run --port "nsp@$ns" >"$work/switch.out" 2>"$work/switch.log" &
switch_pid=$!
for _ in $(seq 100); do grep -q "tapswitch ready" "$work/switch.out" 2>/dev/null && break; sleep 0.1; done
ip -n "$ns" addr add 10.77.0.3/24 dev nsp

echo "== VM ports, plugged before their domains exist"
ctl port add vmpa --vm "${guests[0]}" --mac 52:54:00:77:00:01
ctl port add vmpb --vm "${guests[1]}" --mac 52:54:00:77:00:02

start_guest() { # NAME PORT ADDR PEER
  local name=$1 port=$2 addr=$3 peer=$4
  cat >"$work/$name.xml" <<EOF
<domain type='$domain_type'>
  <name>$name</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$cache/vmlinuz</kernel>
    <initrd>$cache/initrd.img</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 tsw.ip=$addr/24 tsw.peer=$peer tsw.ping_secs=100</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
$(ctl libvirt-xml "$port")
    <serial type='file'><source path='$work/$name.console'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
  virsh -q -c qemu:///system create "$work/$name.xml" >/dev/null
}

echo "== the <interface> element of vmpa (tapswitch libvirt-xml vmpa)"
ctl libvirt-xml vmpa
start_guest "${guests[0]}" vmpa 10.77.0.1 10.77.0.2
start_guest "${guests[1]}" vmpb 10.77.0.2 10.77.0.1
echo "== started ${guests[*]} through libvirt; waiting for them to ping each other"
for guest in "${guests[@]}"; do
  for _ in $(seq 180); do
    grep -qE "TSW-PING-(OK|FAIL)" "$work/$guest.console" 2>/dev/null && break
    sleep 0.5
  done
  echo "$guest: $(grep -aoE "TSW-PING-(OK|FAIL) [0-9.]+" "$work/$guest.console" || echo "no answer")"
done
echo "== the namespace on the same switch pings both guests"
ip netns exec "$ns" ping -c 3 -q 10.77.0.1 | tail -2
ip netns exec "$ns" ping -c 3 -q 10.77.0.2 | tail -2
echo "== tapswitch port list / fdb show"
ctl port list
ctl fdb show
grep -aq "TSW-PING-OK" "$work/${guests[0]}.console" && grep -aq "TSW-PING-OK" "$work/${guests[1]}.console"
echo "== two libvirt guests talked through tapswitch; cleaning up"
