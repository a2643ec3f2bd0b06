#!/usr/bin/env bash
# Install nginx from the distribution's packages (Debian/Ubuntu) unless it is already installed.
#
# Installs nginx-light where the distribution still has it (all this site needs: proxy, map,
# upstream keepalive), otherwise nginx. Needs root, or sudo without a password; the site itself is
# rendered and enabled as nginx/README.md shows. Exit status: 0 when nginx is available afterwards,
# 1 when it could not be installed (the message says why).
set -euo pipefail

die() {
    echo "install_nginx.sh: $*" >&2
    exit 1
}

# Debian installs nginx into /usr/sbin, which is not on every user's PATH.
PATH="$PATH:/usr/sbin:/sbin"

if command -v nginx >/dev/null; then
    echo "install_nginx.sh: nginx is already installed: $(nginx -v 2>&1)"
    exit 0
fi

command -v apt-get >/dev/null ||
    die "nginx is not installed and there is no apt-get here; install nginx with this system's package manager"

if ((EUID == 0)); then
    as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    die "nginx is not installed and installing it needs root: run 'sudo $0' (or 'apt-get install nginx' as root)"
fi

export DEBIAN_FRONTEND=noninteractive
echo "install_nginx.sh: installing nginx with apt-get"
"${as_root[@]}" apt-get update -qq || die "apt-get update failed (no network or no package mirror?)"
package=nginx
if apt-cache show nginx-light >/dev/null 2>&1; then
    package=nginx-light
fi
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "$package" ||
    die "apt-get install $package failed"
command -v nginx >/dev/null || die "installed $package but found no nginx binary"
echo "install_nginx.sh: installed $package: $(nginx -v 2>&1)"
