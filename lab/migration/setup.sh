#!/usr/bin/env bash
# Installs what the migration lab (lab/migration/lab.sh) needs, only when something is missing.
# Idempotent; a no-op that takes well under a second when everything is there. Called by
# .ci/setup, or by hand: `sudo lab/migration/setup.sh [--kamailio]`.
#
# qemu-system-x86 must match the machine's qemu-utils: this image carries qemu-utils
# 10.0.x~bpo12 from bookworm-backports, which declares "Breaks: qemu-system-common (<< 8.0)",
# so bookworm's own qemu-system-x86 (7.2) cannot be installed next to it. In that case
# qemu-system-x86 comes from bookworm-backports through a private apt configuration under
# $APT_DIR: nothing in /etc/apt is changed and the system's package lists stay as they were.
set -euo pipefail

APT_DIR=${APT_DIR:-/var/cache/imsprobe-migration-lab/apt}

# busybox-static: the guest's userland; cpio + gzip + xz-utils + zstd: pack the initramfs and
# unpack kernel modules; iproute2: namespaces, veths, bridges, taps, tc; iputils-ping: the lab's
# readiness check; tcpdump: timing of the destination's announcements (RARP/GARP) on the
# switch; python3: the QMP driver; gcc + libc6-dev: the guest's static C tools.
PKGS=(busybox-static cpio gzip xz-utils zstd iproute2 iputils-ping tcpdump python3 gcc libc6-dev)
# --kamailio: debootstrap + e2fsprogs build the Kamailio guest's root image (build-guest.sh)
[ "${1:-}" = --kamailio ] && PKGS+=(debootstrap e2fsprogs)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
apt_get() {
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 "$@"
}

missing=()
for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> migration lab: installing ${missing[*]}"
  apt_get update
  apt_get -y install --no-install-recommends "${missing[@]}"
fi

if ! installed qemu-system-x86; then
  qu=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
  if [[ "$qu" == *bpo12* ]]; then
    echo "==> migration lab: qemu-utils $qu is from bookworm-backports; qemu-system-x86 from there too"
    "${as_root[@]}" mkdir -p "$APT_DIR/lists/partial"
    key=/usr/share/keyrings/debian-archive-keyring.gpg
    printf 'deb [signed-by=%s] http://deb.debian.org/debian %s main\n' \
      "$key" bookworm "$key" bookworm-updates "$key" bookworm-backports |
      "${as_root[@]}" tee "$APT_DIR/sources.list" >/dev/null
    printf 'deb [signed-by=%s] http://deb.debian.org/debian-security bookworm-security main\n' \
      "$key" | "${as_root[@]}" tee -a "$APT_DIR/sources.list" >/dev/null
    # Private lists, and no binary cache written: the system's apt state is not touched.
    private=(-o "Dir::Etc::SourceList=$APT_DIR/sources.list" -o Dir::Etc::SourceParts=/dev/null
             -o "Dir::State::Lists=$APT_DIR/lists" -o Dir::Cache::pkgcache=
             -o Dir::Cache::srcpkgcache=)
    apt_get "${private[@]}" update
    apt_get "${private[@]}" -y install --no-install-recommends -t bookworm-backports qemu-system-x86
  else
    echo "==> migration lab: installing qemu-system-x86"
    apt_get update
    apt_get -y install --no-install-recommends qemu-system-x86
  fi
fi
echo "==> migration lab: $(qemu-system-x86_64 --version | head -n 1)"
