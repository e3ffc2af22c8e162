#!/usr/bin/env bash
# The vswitch guest kit: a Debian kernel and a busybox initramfs for QEMU.
#
#   examples/vm/build.sh            # prints KERNEL=... and INITRD=... lines
#
# Downloads (apt-get download) the kernel package Debian's meta-package
# points at (linux-image-cloud-amd64 by default; VSWITCH_VM_KERNEL_PKG picks
# another, e.g. linux-image-amd64) and busybox-static, into the cache
# directory VSWITCH_VM_CACHE (default /var/cache/vswitch-vm). From them it
# builds:
#   vmlinuz      the kernel
#   initrd.gz    busybox, the virtio-net modules (virtio_ring, virtio,
#                virtio_pci_*_dev, virtio_pci, failover, net_failover,
#                virtio_net) and 8021q (with llc, stp, garp, mrp), examples/vm/init as /init and the
#                guest tools vm-send (TCP to a host with nc), vm-serve
#                (a file over HTTP with busybox httpd, for fetch.py) and
#                vm-fetch (another guest's vm-serve, timed, with wget)
# Rebuilt only when the packages or the guest files change; safe to run
# concurrently (a lock in the cache directory). Needs root only to write the
# default cache directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${VSWITCH_VM_CACHE:-/var/cache/vswitch-vm}
meta=${VSWITCH_VM_KERNEL_PKG:-linux-image-cloud-amd64}
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

apt_dl() { (cd "$cache" && apt-get -q -o APT::Sandbox::User=root download "$@" >/dev/null 2>"$cache/apt.err"); }

# The concrete kernel package behind the meta-package (or the name itself
# when it is already concrete, e.g. linux-image-6.1.0-57-cloud-amd64).
resolve() {
  { apt-cache depends "$meta" 2>/dev/null || true; } | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
kpkg=$(resolve)
if [ -z "$kpkg" ] && ! apt-cache show "$meta" >/dev/null 2>&1; then
  apt-get update -qq >/dev/null 2>&1 || true
  kpkg=$(resolve)
fi
case "$meta" in linux-image-[0-9]*) kpkg=${kpkg:-$meta} ;; esac

# fetch NAME: the cached .deb of NAME (downloaded when absent).
fetch() {
  local name=$1 deb
  deb=$(ls -t "$cache/${name}"_*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then
    apt_dl "$name" || { apt-get update -qq >/dev/null 2>&1 || true; apt_dl "$name"; } ||
      { echo "error: apt-get download $name failed: $(cat "$cache/apt.err")" >&2; return 1; }
    deb=$(ls -t "$cache/${name}"_*.deb | head -1)
  fi
  echo "$deb"
}

if [ -z "$kpkg" ]; then
  # Offline: the newest kernel package already cached.
  kdeb=$(ls -t "$cache"/linux-image-[0-9]*.deb 2>/dev/null | head -1 || true)
  [ -n "$kdeb" ] || { echo "error: apt knows no kernel package for $meta, and none is cached in $cache" >&2; exit 1; }
else
  kdeb=$(fetch "$kpkg")
fi
bdeb=$(fetch busybox-static)

stamp=$( { echo "$kdeb $bdeb"; cat "$here/init" "$here/vm-send" "$here/vm-serve" "$here/vm-fetch" "$0"; } | sha256sum | cut -d' ' -f1)
if [ -f "$cache/vmlinuz" ] && [ -f "$cache/initrd.gz" ] && [ "$(cat "$cache/stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "KERNEL=$cache/vmlinuz"
  echo "INITRD=$cache/initrd.gz"
  exit 0
fi

work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$kdeb" "$work/k"
dpkg-deb -x "$bdeb" "$work/b"
root=$work/root
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,etc,root,lib/modules}
cp "$work/b/bin/busybox" "$root/bin/busybox"
for app in $("$root/bin/busybox" --list); do
  [ "$app" = busybox ] || ln -s busybox "$root/bin/$app"
done
moddir=$(echo "$work"/k/lib/modules/*)
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci \
         failover net_failover virtio_net llc stp garp mrp 8021q; do
  f=$(find "$moddir" -name "$m.ko*" | head -1)
  [ -n "$f" ] || continue   # built in, or not in this kernel
  case "$f" in
    *.ko.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" >"$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
  esac
done
[ -f "$root/lib/modules/virtio_net.ko" ] || grep -q '^CONFIG_VIRTIO_NET=y' "$work"/k/boot/config-* ||
  { echo "error: no virtio_net in $kdeb" >&2; exit 1; }
install -m 0755 "$here/init" "$root/init"
install -m 0755 "$here/vm-send" "$root/bin/vm-send"
install -m 0755 "$here/vm-serve" "$root/bin/vm-serve"
install -m 0755 "$here/vm-fetch" "$root/bin/vm-fetch"
echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
(cd "$root" && find . | "$root/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -6 >"$work/initrd.gz"
cp "$work"/k/boot/vmlinuz-* "$work/vmlinuz"
mv "$work/vmlinuz" "$cache/vmlinuz"
mv "$work/initrd.gz" "$cache/initrd.gz"
echo "$stamp" >"$cache/stamp"
echo "KERNEL=$cache/vmlinuz"
echo "INITRD=$cache/initrd.gz"
