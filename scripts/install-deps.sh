#!/usr/bin/env bash
# Installs the system packages tapswitch, its tests and its benchmark need on a
# fresh Debian machine. Idempotent: installs only what is missing.
set -euo pipefail

packages=(
  iproute2      # ip netns / ip link in tests and the demo
  iputils-ping  # ping between namespaces
  procps        # sysctl inside test namespaces
  iperf3        # TCP throughput in bench/
  ethtool       # offload inspection in diagnostics
  tcpdump       # captures when a test fails and you want to look
  libvirt-dev   # the virt crate links libvirt (hot-plug, domain events)
  pkg-config    # how the virt crate's build script finds libvirt
  protobuf-compiler             # protoc: tapswitch-evpn generates its gobgpd client at build time
  libprotobuf-dev               # google/protobuf/*.proto (any, empty, timestamp) that gobgp.proto imports
  golang-github-osrg-gobgp-dev  # gobgp's v3 API .proto files the client is generated from
  gobgpd                        # the BGP speaker EVPN runs through (tests start their own, in namespaces)
  frr                           # the reference Linux EVPN VTEP the interop tests run against
  prometheus                    # promtool (~19 MB): tests lint the Prometheus text exposition with `promtool check metrics`
  python3-prometheus-client     # its OpenMetrics parser: tests read the OpenMetrics exposition with it (promtool 2.42 knows only the older format)
  systemd       # systemd-analyze verify on the packaged unit (no running systemd needed)
  man-db        # man -w: the package's man pages are found
  openvswitch-switch            # Open vSwitch as a VXLAN peer (tests/vxlan.rs) and bench's OVS system; started by hand, no service
)

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# cargo-deb builds the Debian package (scripts/package.sh). A pinned version, installed only
# when missing or different: it takes a few minutes to build.
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qxF "cargo-deb $CARGO_DEB_VERSION"; then
  echo "installing cargo-deb $CARGO_DEB_VERSION"
  cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION"
fi

# The TUN driver must be available (built in or as a module).
if [ ! -c /dev/net/tun ]; then
  modprobe tun 2>/dev/null || true
  mkdir -p /dev/net
  [ -c /dev/net/tun ] || mknod /dev/net/tun c 10 200
fi
mkdir -p /run/netns
