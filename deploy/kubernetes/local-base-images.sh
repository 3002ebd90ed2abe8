#!/usr/bin/env bash
# Makes, from Debian's mirror alone, the two base images the Containerfile builds FROM, for a
# machine that cannot pull from docker.io (the project's CI and development machines):
#
#   localhost/imsload-base:bookworm     for BASE: debootstrap --variant=minbase bookworm (what
#                                       debian:bookworm-slim is made from) with the packages the
#                                       Containerfile's last stage installs, already installed
#   localhost/imsload-builder:bookworm  for BUILDER: the same with gcc and libc6-dev (what
#                                       rust:1-bookworm links with) and the build stage's
#                                       packages; no Rust: the build bind-mounts the host's
#                                       toolchain and crate cache (docs/sharding.md)
#
# Both have no apt source, so the Containerfile's `apt-get update && apt-get install` run as
# they would elsewhere but find every package installed and fetch nothing: the build can then
# run with `--network none`. Which packages they hold is read from the Containerfile and kept
# in the label imsload.packages; an image whose label no longer matches is made again, so a
# Containerfile that installs something new is noticed here (and by tests/container.rs).
#
# usage: deploy/kubernetes/local-base-images.sh [--check]
#   --check  only say whether both images are current (exit 0) or not (exit 1, naming which)
# Needs root, podman and debootstrap; ~2-3 min the first time, a no-op when current.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CF="$HERE/Containerfile"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# debootstrap's downloaded .debs, kept so that a second image (or a remake) fetches nothing.
CACHE=${IMSLOAD_IMAGE_CACHE:-/var/cache/imsload-images}
die() { echo "local-base-images: $*" >&2; exit 1; }

# The packages stage N (1 = build, 2 = runtime) installs with apt-get, space-separated.
stage_packages() {
  awk -v want="$1" '
    /^FROM / { stage++ }
    stage == want && /apt-get install/ { grab = 1 }
    grab {
      for (i = 1; i <= NF; i++) {
        if ($i == "&&" && seen) { grab = 0; break }
        if (seen && $i != "\\") printf "%s ", $i
        if ($i == "--no-install-recommends") seen = 1
      }
      if (!grab) seen = 0
    }' "$CF" | xargs
}

build_pkgs=$(stage_packages 1)
base_pkgs=$(stage_packages 2)
[ -n "$build_pkgs" ] && [ -n "$base_pkgs" ] ||
  die "cannot read the apt-get install lines of $CF (build: '$build_pkgs', runtime: '$base_pkgs')"
# Labels name what each image was made from; the recipe's tail changes when this script
# changes how images are made.
RECIPE=minbase-1
base_label="$RECIPE $base_pkgs"
builder_extra="gcc libc6-dev"
builder_label="$RECIPE $builder_extra $build_pkgs"

label_of() {
  podman image inspect --format '{{index .Labels "imsload.packages"}}' "$1" 2>/dev/null || true
}
current() { [ "$(label_of "$1")" = "$2" ]; }

if [ "${1:-}" = --check ]; then
  ok=0
  current localhost/imsload-base:bookworm "$base_label" ||
    { echo "localhost/imsload-base:bookworm is missing or not made for: $base_label" >&2; ok=1; }
  current localhost/imsload-builder:bookworm "$builder_label" ||
    { echo "localhost/imsload-builder:bookworm is missing or not made for: $builder_label" >&2; ok=1; }
  exit $ok
fi

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap)"
for c in podman debootstrap; do
  command -v "$c" >/dev/null || die "$c not found: apt-get install $c (or run .ci/setup)"
done
mkdir -p "$CACHE/debs"
exec 9>"$CACHE/.lock"
flock -w 900 9 || die "another run holds $CACHE/.lock for more than 15 min"

# make TAG LABEL PACKAGES... [ENV...]: debootstrap, empty apt sources, podman import.
make_image() {
  local tag=$1 label=$2 pkgs=$3; shift 3
  if current "$tag" "$label"; then
    echo "==> $tag is current"
    return
  fi
  echo "==> making $tag (debootstrap bookworm + ${pkgs// /,})"
  local root
  root=$(mktemp -d "$CACHE/root.XXXXXX")
  # shellcheck disable=SC2064 # expand now: $root is local
  trap "rm -rf '$root'" RETURN
  debootstrap --variant=minbase --cache-dir="$CACHE/debs" --include="${pkgs// /,}" \
    bookworm "$root" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 ||
    die "debootstrap failed; the end of $CACHE/debootstrap.log: $(tail -n 5 "$CACHE/debootstrap.log")"
  # No source: the Containerfile's apt-get update fetches nothing and its install finds the
  # packages installed. debootstrap's leftovers go as the official images' do.
  : > "$root/etc/apt/sources.list"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  local changes=(--change "LABEL imsload.packages=\"$label\"" --change 'CMD ["bash"]')
  for e in "$@"; do changes+=(--change "ENV $e"); done
  tar -C "$root" --numeric-owner -c . | podman import --quiet "${changes[@]}" - "$tag" >/dev/null
  echo "==> $tag: $(podman image inspect --format '{{.Size}}' "$tag" | numfmt --to=si)B"
}

make_image localhost/imsload-base:bookworm "$base_label" "$base_pkgs"
# The build's toolchain is bind-mounted at /opt/rust and the crate cache at
# /usr/local/cargo/registry (rust:1-bookworm's CARGO_HOME); cargo must not reach crates.io.
make_image localhost/imsload-builder:bookworm "$builder_label" "$builder_extra $build_pkgs" \
  "PATH=/opt/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  "CARGO_HOME=/usr/local/cargo" "CARGO_NET_OFFLINE=true"
