#!/usr/bin/env bash
# Install Debian's chromium package unless /usr/bin/chromium is already there.
#
# The browser tests (tests/browser/) drive this executable with Playwright's Python package; no
# browser build is ever downloaded any other way (never `playwright install`). Needs root, or sudo
# without a password. Exit status: 0 when /usr/bin/chromium is available afterwards, 1 when it
# could not be installed (the message says why).
set -euo pipefail

CHROMIUM=/usr/bin/chromium

die() {
    echo "install_chromium.sh: $*" >&2
    exit 1
}

if [[ -x $CHROMIUM ]]; then
    echo "install_chromium.sh: chromium is already installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
    exit 0
fi

command -v apt-get >/dev/null ||
    die "chromium is not installed and there is no apt-get here; install chromium with this system's package manager"

if ((EUID == 0)); then
    as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    die "chromium is not installed and installing it needs root: run 'sudo $0' (or 'apt-get install chromium' as root)"
fi

export DEBIAN_FRONTEND=noninteractive
echo "install_chromium.sh: installing chromium with apt-get"
"${as_root[@]}" apt-get update -qq || die "apt-get update failed (no network or no package mirror?)"
"${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core ||
    die "apt-get install chromium failed"
[[ -x $CHROMIUM ]] || die "installed chromium but found no $CHROMIUM"
echo "install_chromium.sh: installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
