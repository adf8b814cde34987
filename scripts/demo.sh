#!/usr/bin/env bash
# The newcomer's first command: install what is needed, build, and run the
# demo (three namespaces talking through tapswitch). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (TAPs and namespaces need CAP_NET_ADMIN)" >&2; exit 1; }
bash scripts/install-deps.sh
cargo build --release --locked --bin tapswitch
exec target/release/tapswitch demo
