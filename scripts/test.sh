#!/usr/bin/env bash
# The test suite: formatting, lints, unit/property tests and the end-to-end
# tests on real TAPs and namespaces. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (tests create TAPs and namespaces)" >&2; exit 1; }
bash scripts/install-deps.sh
# QEMU, libvirt and the tiny guest for tests/vm.rs. Daemons this run starts are stopped at exit;
# ones already running are left alone.
if ! pgrep -x libvirtd >/dev/null && ! pgrep -x virtlogd >/dev/null; then
  trap 'bash scripts/vm-testbed.sh --stop' EXIT
fi
bash scripts/vm-testbed.sh
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# The daemon library without libvirt (no VM ports) must build too.
cargo check --locked -p tapswitch --no-default-features
# A short soak (the full one is 10 minutes, see bench/README.md): memory and fds must stay flat.
cargo build --locked --workspace
target/debug/tapswitch-bench soak --duration 45 --tapswitch target/debug/tapswitch \
  --output "${TMPDIR:-/tmp}/tapswitch-soak-ci.json"
# The Debian package: built (release), installed with dpkg -i, the demo run from
# /usr/bin/tapswitch, removed and purged, leaving nothing behind.
bash scripts/package.sh
bash scripts/test-package.sh
# Last, so that its summary closes the output.
cargo test --locked --workspace
# Every fuzz target for a short, bounded time (longer runs: scripts/fuzz.sh SECONDS).
bash scripts/fuzz.sh 10
