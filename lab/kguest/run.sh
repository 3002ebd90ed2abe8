#!/usr/bin/env bash
# Runs one command of this host under Debian's kernel, in a QEMU guest (TCG), and exits with its
# exit code. For what this machine's kernel lacks: it has no ESP (CONFIG_INET_ESP off, no module
# loading), Debian's has. The guest sees the host's whole tree (virtio-9p, read-only, under an
# overlay in guest memory) and runs the command chrooted into it, so the same binaries and paths
# work and what it writes stays in the guest. Slow (emulated CPU): for small checks, not
# benchmarks.
#
# usage: lab/kguest/run.sh [--timeout SECONDS] [--mem MIB] -- COMMAND [ARGS...]
#   prints the command's output, then exits with its code: 124 on timeout, 125 when this
#   machine cannot run the guest (not root, no QEMU, no kernel), 126 when the guest ran but could
#   not run the command (a bug here, never a reason to skip). Needs root (the 9p share of /), qemu-system-x86 and the migration lab's
#   kernel (lab/migration/build-guest.sh, which .ci/setup runs).
# Environment: GUEST_DIR (the migration lab's, default /var/cache/imsprobe-migration-lab/guest).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib/initramfs.sh
. "$HERE/../lib/initramfs.sh"
GUEST_DIR=${GUEST_DIR:-/var/cache/imsprobe-migration-lab/guest}
TIMEOUT=600 MEM=1024
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) TIMEOUT=$2; shift 2 ;;
    --mem) MEM=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "kguest: unknown option $1 (usage: run.sh [--timeout S] [--mem MIB] -- CMD...)" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "kguest: no command (usage: run.sh [--timeout S] -- CMD...)" >&2; exit 2; }
die() { echo "kguest: $*" >&2; exit 125; }
[ "$(id -u)" -eq 0 ] || die "needs root (it shares / with the guest)"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found: run lab/migration/setup.sh"
bash "$HERE/../migration/build-guest.sh" >&2 || die "the migration lab's guest kernel cannot be built"
kdeb=$(ls "$GUEST_DIR"/debs/linux-image-[0-9]*.deb 2>/dev/null | head -n 1)
[ -n "$kdeb" ] && [ -s "$GUEST_DIR/vmlinuz" ] || die "no kernel in $GUEST_DIR"

# 1. the initramfs: busybox, init, and the modules (rebuilt when this script or init change)
KG="$GUEST_DIR/kguest"
mkdir -p "$KG"
exec 9>"$KG/.lock"
flock -w 600 9 || die "another build holds $KG/.lock"
stamp=$(cat "$HERE/run.sh" "$HERE/init" "$HERE/../lib/initramfs.sh" | sha256sum | cut -c1-16)
if [ "$(cat "$KG/stamp" 2>/dev/null)" != "$stamp $(basename "$kdeb")" ] || [ ! -s "$KG/initramfs.gz" ]; then
  work=$(mktemp -d "$KG/.build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  # virtio and 9p for the shares, overlay over the read-only one; veth for namespaces joined by
  # a link; ESP and the crypto it builds on (authenc, the IV generators and the default RNG
  # they seed from, DES), loaded up front since the guest has no modprobe to load them on
  # demand. Without drbg, every CBC SA fails with "unable to initialize cryptographic
  # operations" (echainiv finds no stdrng).
  initramfs_start "$work" "$kdeb" virtio_pci 9pnet_virtio 9p overlay veth xfrm_user esp4 esp6 \
    authenc authencesn jitterentropy_rng drbg echainiv seqiv des_generic
  install -m 755 "$HERE/init" "$work/initramfs/init"
  initramfs_pack "$work" "$KG/initramfs.gz"
  echo "$stamp $(basename "$kdeb")" >"$KG/stamp"
  echo "kguest: initramfs with ${INITRAMFS_MODULES[*]}" >&2
fi
flock -u 9

# 2. the job: the command, run from the current directory with the current environment's PATH
job=$(mktemp -d /tmp/kguest.XXXXXX)
trap 'rm -rf "$job"' EXIT
{
  echo "cd $(printf %q "$PWD") || exit 126"
  echo "export PATH=$(printf %q "$PATH") HOME=/root KGUEST=1"
  env | grep -E '^(RUST_BACKTRACE|RUST_LOG|CI|IPSEC_DEBUG)=' | sed 's/^/export /' || true
  printf '%q ' "$@"; echo
} >"$job/cmd"
log="$job/console"
set +e
# One vCPU. With two, a boot on a loaded host once hung for good (CI, d35658f): the second vCPU's
# timer never fired after its bring-up (RCU "timer wakeup didn't happen ... on cpu=1", 12 RCU
# softirqs on it where a sound boot has ~500 by the time the job starts) while CPU 0 ran on for
# 900 s; 60 boots beside two other QEMUs and two busy loops did not bring it back, so it lives in
# TCG's emulation of a second CPU, not in anything here. One vCPU has no second CPU to lose, and
# costs nothing measurable: the 50-UE IPsec test took 45 s with one and 46 s with two.
timeout --foreground -k 10 "$TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m "$MEM" \
  -kernel "$GUEST_DIR/vmlinuz" -initrd "$KG/initramfs.gz" \
  -append "console=ttyS0 quiet panic=-1 kguest.job=$job" \
  -virtfs local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap \
  -virtfs "local,path=$job,mount_tag=job,security_model=none" \
  -display none -no-reboot -serial "file:$log" -monitor none -nic none
qrc=$?
set -e
cat "$job/out" 2>/dev/null || true
if [ $qrc = 124 ]; then
  echo "kguest: timed out after ${TIMEOUT}s; console:" >&2; tail -n 30 "$log" >&2; exit 124
fi
if [ ! -s "$job/rc" ]; then
  echo "kguest: the guest did not run the command (qemu exit $qrc); console:" >&2
  tail -n 30 "$log" >&2
  exit 126
fi
exit "$(cat "$job/rc")"
