#!/usr/bin/env bash
# Runs every rktup test on this machine: installs what the tests need (Debian packages, as root),
# then `cargo test` across the workspace. Safe to run again; installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the tests use for real: systemd-analyze verifies rendered units.
packages=(systemd)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo test --workspace --locked "$@"
