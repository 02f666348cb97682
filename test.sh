#!/usr/bin/env bash
# Runs every rktup test on this machine: installs what the tests need (Debian packages, as root),
# then `cargo test` across the workspace. Safe to run again; installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the tests use for real: systemd-analyze verifies rendered units; the agent's
# tests build images with umoci/skopeo from busybox-static, serve them from docker-registry, wire
# pods with the real CNI plugins and compare against runc.
packages=(systemd umoci skopeo docker-registry busybox-static containernetworking-plugins
          iptables iproute2 util-linux runc)
# The KVM stage1's test boots Debian's kernel with qemu from bookworm-backports (the plain
# bookworm qemu conflicts with the image's qemu-utils).
kvm_packages=(qemu-system-x86 seabios)

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

if [ "$(id -u)" -eq 0 ] && [ -e /dev/kvm ] && ! command -v qemu-system-x86_64 >/dev/null; then
  src=/etc/apt/sources.list.d/debian.sources
  if [ -f "$src" ] && ! grep -q bookworm-backports "$src"; then
    sed -i '0,/^Suites: bookworm bookworm-updates$/s//Suites: bookworm bookworm-updates bookworm-backports/' "$src"
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports --no-install-recommends "${kvm_packages[@]}" \
    || echo "test.sh: qemu from bookworm-backports could not be installed; the KVM stage1 test will skip" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends linux-image-amd64 \
    || echo "test.sh: no guest kernel; the KVM stage1 test will skip" >&2
fi

cargo test --workspace --locked "$@"
