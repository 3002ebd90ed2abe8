#!/usr/bin/env bash
# Builds the migration lab's guest into GUEST_DIR (lab.sh up calls this; a no-op when current).
#
# usage: lab/migration/build-guest.sh [--kamailio]
#   GUEST_DIR/vmlinuz        Debian's kernel: the package linux-image-amd64 points at, fetched
#                            with `apt-get download` and unpacked with dpkg-deb (no install)
#   GUEST_DIR/initramfs.gz   busybox-static, the virtio/ext4 modules, guest/init and our two
#                            static tools: guest/sip-responder.c and guest/dirtier.c
#   GUEST_DIR/rootfs-kamailio.img   (--kamailio) debootstrap'ed bookworm + kamailio and its IMS,
#                            presence and SQLite modules as an ext4 image, for `lab.sh up
#                            --sip-responder kamailio` and the four IMS guests of `lab.sh up
#                            --ims` (about 2 min, once)
#
# The initramfs is rebuilt when any guest source or this script changed (a hash in
# GUEST_DIR/stamp); the kernel .deb is kept in GUEST_DIR/debs and downloaded only once.
# Environment: GUEST_DIR (default /var/cache/imsprobe-migration-lab/guest).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib/initramfs.sh
. "$HERE/../lib/initramfs.sh"
GUEST_DIR=${GUEST_DIR:-/var/cache/imsprobe-migration-lab/guest}
KAMAILIO=0
[ "${1:-}" = --kamailio ] && KAMAILIO=1
# What the root image holds: Kamailio for the one-guest lab, what lab/ims's P-, I- and
# S-CSCF configs load, and the P-CSCF's media relay (lab.sh up --ims --rtpengine). imshss needs
# nothing beyond libc (lab.sh puts it on the IMS guests' own config disk, so a rebuilt imshss
# needs no new image).
ROOT_PKGS=kamailio,kamailio-ims-modules,kamailio-presence-modules,kamailio-sqlite-modules,rtpengine-daemon
# what identifies the image: its packages and how it is finished (bump the tail on a change)
ROOT_STAMP="$ROOT_PKGS etc-hosts"

die() { echo "build-guest: $*" >&2; exit 1; }
for c in gcc busybox cpio gzip dpkg-deb apt-get; do
  command -v "$c" >/dev/null || die "$c not found: run lab/migration/setup.sh"
done
[ -x /bin/busybox ] && file_is_static=$(LC_ALL=C ldd /bin/busybox 2>&1 || true)
case "${file_is_static:-}" in
  *"not a dynamic"*|*"statically linked"*) ;;
  *) die "/bin/busybox is not the static one (Debian package busybox-static): run lab/migration/setup.sh" ;;
esac

mkdir -p "$GUEST_DIR/debs"
# One build at a time: lab.sh up may race a second up, and CI may run two tests at once.
exec 9>"$GUEST_DIR/.lock"
flock -w 600 9 || die "another build holds $GUEST_DIR/.lock for more than 10 min"

# The root image is current when it was made from this package list and Kamailio config.
rootfs_current() {
  [ -s "$GUEST_DIR/rootfs-kamailio.img" ] &&
    cmp -s "$HERE/guest/kamailio.cfg" "$GUEST_DIR/kamailio.cfg" &&
    [ "$(cat "$GUEST_DIR/rootfs-packages" 2>/dev/null)" = "$ROOT_STAMP" ]
}

stamp=$(cat "$HERE/build-guest.sh" "$HERE/../lib/initramfs.sh" "$HERE"/guest/* | sha256sum | cut -c1-16)

# 1. the kernel .deb (cached)
kdeb=$(ls "$GUEST_DIR"/debs/linux-image-[0-9]*.deb 2>/dev/null | head -n 1 || true)
if [ -z "$kdeb" ]; then
  echo "build-guest: downloading Debian's kernel package" >&2
  tmp=$(mktemp -d "$GUEST_DIR/debs/.dl.XXXXXX")
  # apt-get download writes into the current directory; as root it warns that _apt cannot
  # write there, which is harmless, so only real errors are shown.
  fetch() { (cd "$tmp" && apt-get -q download "$@" 2>&1 | grep -v -e unsandboxed -e '^Get:' >&2 || true); }
  fetch linux-image-amd64
  if ! ls "$tmp"/linux-image-amd64_*.deb >/dev/null 2>&1; then
    echo "build-guest: package lists look stale, running apt-get update" >&2
    apt-get -q -o DPkg::Lock::Timeout=300 update >&2
    fetch linux-image-amd64
  fi
  meta=$(ls "$tmp"/linux-image-amd64_*.deb 2>/dev/null) ||
    die "apt-get download linux-image-amd64 failed (no Debian package lists? run apt-get update)"
  kpkg=$(dpkg-deb -f "$meta" Depends | grep -o 'linux-image-[0-9][^ ,]*' | head -n 1)
  [ -n "$kpkg" ] || die "cannot read the kernel package from $meta's Depends"
  fetch "$kpkg"
  ls "$tmp"/"$kpkg"_*.deb >/dev/null 2>&1 || die "apt-get download $kpkg failed"
  mv "$tmp"/"$kpkg"_*.deb "$GUEST_DIR/debs/"
  rm -rf "$tmp"
  kdeb=$(ls "$GUEST_DIR"/debs/linux-image-[0-9]*.deb | head -n 1)
fi

if [ "$(cat "$GUEST_DIR/stamp" 2>/dev/null)" = "$stamp $(basename "$kdeb")" ] &&
   [ -s "$GUEST_DIR/vmlinuz" ] && [ -s "$GUEST_DIR/initramfs.gz" ] &&
   { [ $KAMAILIO = 0 ] || rootfs_current; }; then
  exit 0
fi
echo "build-guest: building the guest in $GUEST_DIR" >&2

work=$(mktemp -d "$GUEST_DIR/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
# 2. the initramfs: busybox and the modules, in load order (lab/lib/initramfs.sh): virtio and
#    its network driver, and (for the Kamailio guest's root disk; in every initramfs, so one
#    initramfs serves both guests) virtio_blk and ext4 with crc32c_generic (TCG's qemu64 CPU
#    has no SSE4.2 for crc32c-intel); xfrm_user for the IMS P-CSCF guest, whose ims_ipsec_pcscf
#    opens an XFRM netlink socket at start even with IPsec unused
initramfs_start "$work" "$kdeb" virtio_pci virtio_net virtio_blk ext4 crc32c_generic xfrm_user
kver=$(ls "$work/lib/modules")
root="$work/initramfs"
mkdir -p "$root"/{etc,tmp,run,root}
# static: the initramfs has no C library
gcc -O2 -static -Wall -o "$root/bin/sip-responder" "$HERE/guest/sip-responder.c"
gcc -O2 -static -Wall -o "$root/bin/dirtier" "$HERE/guest/dirtier.c"
install -m 755 "$HERE/guest/init" "$root/init"
initramfs_pack "$work" "$work/initramfs.gz"

# 3. optional: a read-only root filesystem with Kamailio
if [ $KAMAILIO = 1 ] && ! rootfs_current; then
  for c in debootstrap mkfs.ext4; do
    command -v "$c" >/dev/null ||
      die "$c not found: run lab/migration/setup.sh --kamailio"
  done
  rf="$GUEST_DIR/rootfs-kamailio"
  if [ "$(cat "$rf/.packages" 2>/dev/null)" != "$ROOT_PKGS" ]; then
    echo "build-guest: debootstrap bookworm + $ROOT_PKGS (about 2 min, once)" >&2
    rm -rf "$rf"
    debootstrap --variant=minbase --include="$ROOT_PKGS" bookworm "$rf" http://deb.debian.org/debian >&2
    echo "$ROOT_PKGS" >"$rf/.packages"
    rm -rf "$rf"/var/cache/apt/archives/*.deb "$rf"/var/lib/apt/lists/*
  fi
  cp "$HERE/guest/kamailio.cfg" "$rf/etc/kamailio/lab.cfg"
  # minbase has no /etc/hosts; the IMS guests bind their own over it (the image is read-only)
  [ -e "$rf/etc/hosts" ] || echo "127.0.0.1 localhost" >"$rf/etc/hosts"
  kib=$(du -sk "$rf" | cut -f1)
  # mkfs.ext4 -d fills the image from a directory: no loop mount needed
  mkfs.ext4 -q -F -O ^has_journal -L labroot -d "$rf" "$work/rootfs-kamailio.img" \
    "$((kib * 5 / 4 / 1024 + 64))M"
  mv "$work/rootfs-kamailio.img" "$GUEST_DIR/rootfs-kamailio.img"
  cp "$HERE/guest/kamailio.cfg" "$GUEST_DIR/kamailio.cfg"
  echo "$ROOT_STAMP" >"$GUEST_DIR/rootfs-packages"
fi

cp "$work"/boot/vmlinuz-* "$GUEST_DIR/vmlinuz.tmp"
mv "$GUEST_DIR/vmlinuz.tmp" "$GUEST_DIR/vmlinuz"
mv "$work/initramfs.gz" "$GUEST_DIR/initramfs.gz"
echo "$kver" >"$GUEST_DIR/kernel-version"
echo "$stamp $(basename "$kdeb")" >"$GUEST_DIR/stamp"
echo "build-guest: kernel $kver, modules ${INITRAMFS_MODULES[*]}, initramfs $(du -k "$GUEST_DIR/initramfs.gz" | cut -f1) KiB" >&2
