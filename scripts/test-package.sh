#!/usr/bin/env bash
# Installs the package scripts/package.sh built, checks what it installed, runs the demo
# from the installed binary, removes it, purges it, and checks that the purge left nothing
# behind: every path named *tapswitch* under /etc /usr /var /run is as it was before.
# Run as root, on a machine where the package is not installed (it refuses otherwise:
# it would remove somebody's install).
set -euo pipefail
cd "$(dirname "$0")/.."
deb=target/debian/tapswitch.deb
[ -f "$deb" ] || { echo "$deb is missing: run scripts/package.sh" >&2; exit 1; }
fail() { echo "test-package: $*" >&2; exit 1; }
installed() { dpkg-query -W -f='${db:Status-Status}' tapswitch 2>/dev/null || true; }
[ "$(installed)" = "" ] || [ "$(installed)" = "not-installed" ] ||
  fail "the tapswitch package is installed here already ($(installed)); not touching it"

# The state directory of a switch run by hand (or by the soak) without the package: the
# purge removes /var/lib/tapswitch, so somebody's is kept aside and put back at the end.
kept=""
if [ -e /var/lib/tapswitch ]; then
  kept=$(mktemp -d)
  mv /var/lib/tapswitch "$kept/"
fi
restore() {
  dpkg -P tapswitch >/dev/null 2>&1 || true
  if [ -n "$kept" ]; then
    rm -rf /var/lib/tapswitch
    mv "$kept/tapswitch" /var/lib/tapswitch
    rmdir "$kept"
  fi
}
trap restore EXIT

traces() { find /etc /usr /var /run -name '*tapswitch*' 2>/dev/null | sort; }
before=$(traces)

dpkg -i "$deb"
[ "$(installed)" = "installed" ] || fail "dpkg -i left the package $(installed)"

# The binary, with the commit it was built from.
version=$(/usr/bin/tapswitch --version)
echo "installed: $version"
if commit=$(git rev-parse --short HEAD 2>/dev/null); then
  [[ "$version" == *"($commit)"* ]] || fail "--version says '$version', HEAD is $commit"
fi
# The default config, a conffile, and valid.
dpkg-query -W -f='${Conffiles}\n' tapswitch | grep -q ' /etc/tapswitch/tapswitch.toml ' ||
  fail "/etc/tapswitch/tapswitch.toml is not a conffile"
/usr/bin/tapswitch check-config /etc/tapswitch/tapswitch.toml >/dev/null
# Man pages, one per subcommand (man -w: found, not formatted into man-db's cache).
for page in tapswitch tapswitch-run tapswitch-port-add; do
  man -w "$page" >/dev/null || fail "man $page: no page"
done
# Completions: bash's loads and registers, zsh's and fish's parse where those shells exist.
bash -c 'source /usr/share/bash-completion/completions/tapswitch && complete -p tapswitch' >/dev/null ||
  fail "the bash completion does not register"
[ -s /usr/share/zsh/vendor-completions/_tapswitch ] || fail "no zsh completion"
[ -s /usr/share/fish/vendor_completions.d/tapswitch.fish ] || fail "no fish completion"
if command -v zsh >/dev/null; then zsh -n /usr/share/zsh/vendor-completions/_tapswitch; fi
if command -v fish >/dev/null; then fish -n /usr/share/fish/vendor_completions.d/tapswitch.fish; fi
# The service's user and the unit, checked as systemd would load it (no running systemd
# needed): the binary it starts, every directive. (Its Documentation= pages are checked
# above: systemd-analyze would format them into /var/cache/man, which the purge leaves.)
getent passwd tapswitch >/dev/null || fail "no tapswitch user"
unit=$(dpkg -L tapswitch | grep '/systemd/system/tapswitch.service$') || fail "no unit installed"
systemd-analyze verify --man=no "$unit"

# The newcomer's first command, from the installed binary.
/usr/bin/tapswitch demo

dpkg -r tapswitch
[ "$(installed)" = "config-files" ] || fail "dpkg -r left the package $(installed)"
[ ! -e /usr/bin/tapswitch ] || fail "dpkg -r left /usr/bin/tapswitch"
[ -f /etc/tapswitch/tapswitch.toml ] || fail "dpkg -r removed the conffile (only purge may)"
dpkg -P tapswitch
[ "$(installed)" = "" ] || [ "$(installed)" = "not-installed" ] || fail "dpkg -P left the package $(installed)"
after=$(traces)
if [ "$before" != "$after" ]; then
  diff <(echo "$before") <(echo "$after") >&2 || true
  fail "the purge left these behind (> lines)"
fi
echo "package: installed, ran the demo, removed and purged without leftovers"
