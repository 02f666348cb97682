#!/usr/bin/env bash
# Runs every rktup test on this machine: installs what the tests need (Debian packages, as root),
# then `cargo test` across the workspace. Safe to run again; installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the tests use for real: systemd-analyze verifies rendered units; the agent's
# tests build images with umoci/skopeo from busybox-static, serve them from docker-registry, wire
# pods with the real CNI plugins and compare against runc; `script` (bsdutils) gives kubectl
# exec -t a terminal; the Prometheus Python client parses the agent's /metrics/resource as a
# second, independent reader.
packages=(systemd umoci skopeo docker-registry busybox-static containernetworking-plugins
          iptables iproute2 util-linux bsdutils runc kmod nftables bind9-dnsutils
          python3-prometheus-client)
# The KVM stage1 test and the pure cgroup v2 test boot Debian's kernel with qemu from
# bookworm-backports (the plain bookworm qemu conflicts with the image's qemu-utils).
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
    || echo "test.sh: qemu from bookworm-backports could not be installed; the KVM stage1 and cgroup v2 tests will skip" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends linux-image-amd64 \
    || echo "test.sh: no guest kernel; the KVM stage1 and cgroup v2 tests will skip" >&2
fi

# kubectl 1.20 (Debian's kubernetes-client) beside the current /usr/bin/kubectl: the tests of older
# clients (exec, attach and port-forward over SPDY; apply with OpenAPI v2) run it from
# /opt/kubectl-1.20. Installing the package would replace /usr/bin/kubectl, so it is unpacked.
old_kubectl=/opt/kubectl-1.20/usr/bin/kubectl
if [ ! -x "$old_kubectl" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: $old_kubectl is missing (run as root to unpack Debian's kubernetes-client there)" >&2
    exit 1
  fi
  deb_dir=$(mktemp -d)
  (cd "$deb_dir" && apt-get download -qq kubernetes-client 2>/dev/null) \
    || { apt-get update -qq && (cd "$deb_dir" && apt-get download -qq kubernetes-client); }
  dpkg-deb -x "$deb_dir"/kubernetes-client_*.deb /opt/kubectl-1.20
  rm -rf "$deb_dir"
fi

# Python tools the provider tests use for real: moto's EC2/Auto Scaling/S3 server, and Google's
# own compute.v1.json (shipped in google-api-python-client) that the fake Compute Engine obeys.
venv=${RKTUP_VENV:-/opt/rktup-venv}
python_packages=("moto[server]==5.2.5" "google-api-python-client==2.202.0")
if ! "$venv/bin/python" -c 'import moto, googleapiclient' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${python_packages[@]}"
fi

# Every test binary runs even when an earlier one fails (--no-fail-fast), its output streamed as
# it comes; a copy goes to a temporary file, from which the last line sums up cargo's
# `test result:` lines (unit tests, integration tests and doctests alike) and names the test
# binaries that failed, including those that crashed or did not build and so printed no result.
log=$(mktemp "${TMPDIR:-/tmp}/rktup-test.XXXXXX")
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The node build (README, "A node build"; what cloud nodes download): its feature set compiles,
# its CLI has the commands nodes run and names the feature of each left-out one. Only the
# binary's unit tests, so only the node's dependencies at their feature set are built (time in
# BENCHMARKS.md, "Release binary size"). Skipped when test.sh is given arguments (a filter).
if [ "$#" -eq 0 ]; then
  cargo test --locked -p rktup --bin rktup --no-default-features --features node 2>&1 | tee -a "$log"
  node_status=${PIPESTATUS[0]}
  [ "$status" -ne 0 ] || status=$node_status
fi
set -e
summary=$(awk -v status="$status" '
  /^test result: / {
    binaries++
    for (i = 1; i <= NF; i++) {
      v = $(i - 1) + 0
      if ($i ~ /^passed;?$/) passed += v
      else if ($i ~ /^failed;?$/) failed += v
      else if ($i ~ /^ignored;?$/) ignored += v
    }
  }
  # --no-fail-fast ends with "error: N targets failed:" and one indented `-p … --test …` per target.
  /^error: [0-9]+ targets? failed:/ { listing = 1; next }
  listing && /^ +`/ { gsub(/^ +|`/, ""); targets = targets (targets ? ", " : "") $0; nfailed++; next }
  listing { listing = 0 }
  END {
    verdict = (status == 0 && failed == 0) ? "ok" : "FAILED"
    line = sprintf("test.sh: %s. %d passed; %d failed; %d ignored (%d test binaries reported)",
                   verdict, passed, failed, ignored, binaries)
    if (nfailed) line = line sprintf("; %d failed: %s", nfailed, targets)
    else if (status != 0) line = line sprintf("; cargo exited with status %d", status)
    print line
  }' "$log")
echo
echo "$summary"
if [ "$status" -ne 0 ] || [[ $summary != "test.sh: ok."* ]]; then
  exit 1
fi
