# An initramfs from Debian's kernel package and busybox-static, shared by
# lab/migration/build-guest.sh and lab/kguest/run.sh. Source it; the caller defines die().
#
#   initramfs_start WORK KDEB MODULE...   unpacks KDEB's boot/ and module tree under WORK, puts
#       each MODULE and what it depends on into WORK/initramfs/lib/modules (uncompressed, names in
#       lib/modules/load-order, in load order) and busybox with its applets into
#       WORK/initramfs/bin; sets INITRAMFS_MODULES (the load order)
#   initramfs_pack WORK OUT               cpio + gzip of WORK/initramfs into OUT (atomically)

initramfs_start() {
  local work=$1 kdeb=$2 m d applet
  shift 2
  # Only the kernel image and the module directories we take from: the full tree is ~400 MB.
  dpkg-deb --fsys-tarfile "$kdeb" |
    tar -x -C "$work" --wildcards './boot/vmlinuz-*' './lib/modules/*/kernel/drivers/*' \
        './lib/modules/*/kernel/fs/*' './lib/modules/*/kernel/lib/*' \
        './lib/modules/*/kernel/crypto/*' './lib/modules/*/kernel/net/*'
  _moddir="$work/lib/modules/$(ls "$work/lib/modules")/kernel"
  INITRAMFS_MODULES=()
  for m in "$@"; do _initramfs_addmod "$m"; done
  local root="$work/initramfs"
  mkdir -p "$root"/{bin,dev,proc,sys,lib/modules}
  for m in "${INITRAMFS_MODULES[@]}"; do
    _initramfs_modcat "$(_initramfs_modpath "$m")" >"$root/lib/modules/$m.ko"
  done
  echo "${INITRAMFS_MODULES[*]}" >"$root/lib/modules/load-order"
  cp /bin/busybox "$root/bin/"
  for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
  done
  ln -s bin "$root/sbin"
}

initramfs_pack() {
  (cd "$1/initramfs" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$2.tmp"
  mv "$2.tmp" "$2"
}

_initramfs_modpath() {
  find "$_moddir" -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" | head -n 1
}

_initramfs_modcat() {
  case "$1" in
    *.xz) xz -dc "$1" ;; *.zst) zstd -qdc "$1" ;; *) cat "$1" ;;
  esac
}

# The package ships no modules.dep (depmod makes it at install), so the order comes from each
# module's own "depends=" field in its .modinfo strings.
_initramfs_addmod() {
  local m=$1 f d
  for d in "${INITRAMFS_MODULES[@]}"; do [ "$d" = "$m" ] && return 0; done
  f=$(_initramfs_modpath "$m")
  [ -n "$f" ] || die "Debian's kernel has no module $m"
  for d in $(_initramfs_modcat "$f" | tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '); do
    _initramfs_addmod "$d"
  done
  INITRAMFS_MODULES+=("$m")
}
