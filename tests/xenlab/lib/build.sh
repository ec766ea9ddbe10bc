#!/bin/bash
# Build the Xen-lab images. Run by `xenlab build` (as root), not by hand:
#   build.sh OUT WORK
# with these variables set by xenlab (exact package versions, from `apt-cache policy`):
#   SUITE  KVER  XEN_PKG_V  LINUX_PKG_V  BUSYBOX_PKG_V  LAB_SRC (tests/xenlab)
# OUT receives:
#   xen.elf          Debian's xen-hypervisor-4.17-amd64, gunzipped (ELF32 multiboot: QEMU -kernel loads it)
#   vmlinuz          Debian's linux-image-$KVER (dom0 and domU kernel)
#   dom0-initrd.zst  debootstrap minbase + xen-utils-4.17 + selected modules + guest/ files, cpio|zstd
#   domU-initrd.gz   busybox-static + xen-blkfront + xen-netfront + guest/domU-init, cpio|gzip
#   manifest.txt     versions and sizes
# WORK holds the intermediate files (~1.3 GB at peak); it is deleted at the end.
set -euo pipefail
OUT=${1:?OUT}; WORK=${2:?WORK}
: "${SUITE:?}" "${KVER:?}" "${XEN_PKG_V:?}" "${LINUX_PKG_V:?}" "${BUSYBOX_PKG_V:?}" "${LAB_SRC:?}"
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
XV=4.17
DOM0_PKGS=xen-utils-$XV,xenstore-utils,socat,kmod,iproute2,bridge-utils,mount,procps,busybox,xz-utils,util-linux,coreutils,openssh-server
# libvirt's Xen (libxl) driver for the libvirt driver's tests, with virsh as their checker; its
# libvirtd only runs when a test asks for it (`xenlab libvirtd`). virt-ssh-helper (in
# libvirt-daemon) is the far end of libvirt's ssh transport.
DOM0_PKGS+=,libvirt-daemon,libvirt-daemon-driver-xen,libvirt-clients

t_start=$(date +%s)
say() { echo "xenlab build [$(( $(date +%s) - t_start ))s]: $*" >&2; }
retry() {  # retry N CMD...: run CMD up to N times, 5 s, 10 s, ... apart
  local n=$1 i; shift
  for ((i = 1; ; i++)); do
    "$@" && return 0
    [ "$i" -ge "$n" ] && { say "giving up after $n tries: $*"; return 1; }
    say "try $i of $n failed, retrying in $((5 * i)) s: $*"
    sleep $((5 * i))
  done
}

# The Debian mirror that apt on this machine uses for $SUITE (read from its sources at run
# time; nothing is hard-coded). Prints "URI KEYRING" (KEYRING may be empty).
apt_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v s="$SUITE" '
      /^[ \t]*deb[ \t]/ {
        i = 2; opts = ""
        if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) { opts = opts " " $i; i++ }; opts = opts " " $i; i++ }
        if ($(i + 1) == s) {
          kr = ""; if (match(opts, /signed-by=[^] ]+/)) kr = substr(opts, RSTART + 10, RLENGTH - 10)
          print $i, kr; exit
        }
      }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v s="$SUITE" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " s " ") && tolower(enabled) != "no" && uris != "") {
          split(uris, u, " "); print u[1], (kr ~ /^\// ? kr : ""); found = 1; exit
        }
        types = suites = uris = kr = ""; enabled = "yes"
      }
      BEGIN { enabled = "yes" }
      /^#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]/ { next }
      {
        k = tolower($1); sub(/:$/, "", k); v = $0; sub(/^[^:]*:[ \t]*/, "", v)
        if (k == "types") types = v; else if (k == "suites") suites = v
        else if (k == "uris") uris = v; else if (k == "signed-by") kr = v
        else if (k == "enabled") enabled = v
      }
      END { if (!found) flush() }' "$f"
  done
}

# Unmount anything a failed earlier run (debootstrap, chroot) left mounted under WORK.
unmount_work() {
  local m
  [ -d "$WORK" ] || return 0
  for m in $(awk -v w="$(readlink -f "$WORK")/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}
trap unmount_work EXIT
unmount_work
rm -rf --one-file-system "$WORK" "$OUT.tmp"
mkdir -p "$WORK"/{debs,x/xen,x/kernel,x/busybox} "$OUT.tmp"
cd "$WORK"

# --- 1. Debian packages of the hypervisor, the kernel and busybox (exact versions)
say "downloading xen-hypervisor-$XV-amd64=$XEN_PKG_V linux-image-$KVER=$LINUX_PKG_V busybox-static=$BUSYBOX_PKG_V"
(cd debs && retry 4 apt-get -o APT::Sandbox::User=root download -q "xen-hypervisor-$XV-amd64=$XEN_PKG_V" \
   "linux-image-$KVER=$LINUX_PKG_V" "busybox-static=$BUSYBOX_PKG_V") >&2
dpkg-deb -x debs/xen-hypervisor-$XV-amd64_*.deb x/xen
dpkg-deb -x debs/linux-image-${KVER}_*.deb x/kernel
dpkg-deb -x debs/busybox-static_*.deb x/busybox
zcat "x/xen/boot/xen-$XV-amd64.gz" > "$OUT.tmp/xen.elf"
cp "x/kernel/boot/vmlinuz-$KVER" "$OUT.tmp/vmlinuz"
KMOD=x/kernel/lib/modules/$KVER

# --- 2. domU initramfs
say "domU initramfs"
mkdir -p domU/{bin,dev,proc,sys,mnt,tmp,lib/modules}
cp x/busybox/bin/busybox domU/bin/busybox
cp "$KMOD/kernel/drivers/block/xen-blkfront.ko" "$KMOD/kernel/drivers/net/xen-netfront.ko" domU/lib/modules/
install -m 0755 "$LAB_SRC/guest/domU-init" domU/init
(cd domU && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -9n) > "$OUT.tmp/domU-initrd.gz"

# --- 3. dom0 root: debootstrap from the mirror apt uses here
read -r MIRROR KEYRING < <(apt_mirror; echo) || true
ds_args=(--variant=minbase --include="$DOM0_PKGS")
[ -n "${KEYRING:-}" ] && [ -f "$KEYRING" ] && ds_args+=(--keyring="$KEYRING")
[ -n "${MIRROR:-}" ] || say "no apt source found for $SUITE; using debootstrap's default mirror"
say "debootstrap $SUITE ${MIRROR:-(default mirror)}"
do_debootstrap() {
  rm -rf rootfs
  debootstrap "${ds_args[@]}" "$SUITE" rootfs ${MIRROR:+"$MIRROR"} > debootstrap.log 2>&1 \
    || { tail -n 20 debootstrap.log >&2; [ -f rootfs/debootstrap/debootstrap.log ] && tail -n 20 rootfs/debootstrap/debootstrap.log >&2; return 1; }
}
retry 3 do_debootstrap
R=$WORK/rootfs

# --- 4. bring dom0's Xen tools to the hypervisor's exact version. debootstrap only sees
# $SUITE itself, while the hypervisor comes from whatever apt here prefers (usually
# $SUITE-security): install apt's candidate of every xen-source package debootstrap put in.
upd=()
while read -r pkg ver src; do
  [ "$src" = xen ] || continue
  cand=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')
  [ -n "$cand" ] && [ "$cand" != "(none)" ] && [ "$cand" != "$ver" ] && upd+=("$pkg=$cand")
done < <(dpkg-query --admindir="$R/var/lib/dpkg" -W -f='${Package} ${Version} ${source:Package}\n')
if [ ${#upd[@]} -gt 0 ]; then
  say "updating dom0 xen packages: ${upd[*]}"
  mkdir -p "$R/tmp/xenupd"
  (cd "$R/tmp/xenupd" && retry 4 apt-get -o APT::Sandbox::User=root download -q "${upd[@]}") >&2
  printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
  mount -t proc proc "$R/proc"
  set +e
  chroot "$R" sh -c 'dpkg -i /tmp/xenupd/*.deb' > dpkg-xenupd.log 2>&1; rc=$?
  set -e
  umount "$R/proc"
  rm -rf "$R/tmp/xenupd" "$R/usr/sbin/policy-rc.d"
  if [ $rc -ne 0 ]; then
    tail -n 20 dpkg-xenupd.log >&2
    say "WARNING: could not update dom0's xen packages; dom0 keeps the $SUITE versions"
  fi
fi
XEN_UTILS_V=$(dpkg-query --admindir="$R/var/lib/dpkg" -W -f='${Version}' xen-utils-$XV)

# --- 5. kernel modules dom0 needs (backends, loop, bridge, virtio-net, 9p), then depmod
say "modules + trim"
D=$R/lib/modules/$KVER
rm -rf "$D"; mkdir -p "$D/kernel"
for p in drivers/xen drivers/block drivers/virtio drivers/char/virtio_console.ko drivers/net/xen-netback \
         drivers/net/xen-netfront.ko drivers/net/virtio_net.ko drivers/net/net_failover.ko drivers/net/tun.ko \
         drivers/net/dummy.ko drivers/net/ethernet/intel/e1000 net/core net/bridge net/802 net/llc \
         fs/9p fs/netfs fs/fscache net/9p/9pnet.ko net/9p/9pnet_virtio.ko; do
  [ -e "$KMOD/kernel/$p" ] || { say "WARNING: no $p in linux-image-$KVER"; continue; }
  mkdir -p "$D/kernel/$(dirname "$p")"; cp -a "$KMOD/kernel/$p" "$D/kernel/$p"
done
cp "$KMOD"/modules.order "$KMOD"/modules.builtin* "$D/"
depmod -b "$R" "$KVER"

# --- 6. trim what a headless dom0 never uses (python only serves pygrub/xen-bugtool)
rm -rf "$R"/usr/share/{doc,man,info,locale,lintian,bash-completion} "$R"/var/cache/apt/*.bin \
       "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/* "$R"/var/cache/debconf/*-old \
       "$R"/usr/lib/python3* "$R"/usr/bin/python3* "$R"/usr/lib/udev/hwdb.bin "$R"/usr/lib/udev/hwdb.d \
       "$R"/usr/lib/x86_64-linux-gnu/gconv "$R"/usr/lib/x86_64-linux-gnu/perl-base "$R"/usr/bin/perl* \
       "$R"/usr/share/perl* "$R"/debootstrap
# libvirt: only the libxl connection driver is kept (libvirt-daemon pulls in the QEMU driver;
# the others would probe udev, iptables and storage for nothing at every libvirtd start).
LVD=$R/usr/lib/x86_64-linux-gnu/libvirt
find "$LVD/connection-driver" -name 'libvirt_driver_*.so' ! -name libvirt_driver_libxl.so -delete
rm -rf "$LVD/storage-backend" "$R"/usr/share/augeas

# --- 7. the lab's own files
mkdir -p "$R/root/lab" "$R/usr/local/sbin"
install -m 0755 "$LAB_SRC/guest/dom0-init" "$R/init"
install -m 0755 "$LAB_SRC/guest/xenlab-shd" "$R/usr/local/sbin/xenlab-shd"
install -m 0755 "$LAB_SRC/guest/xenlab-sshd" "$R/usr/local/sbin/xenlab-sshd"
# openssh-server's own host keys (made by its postinst) are never used: `xenlab up` makes the
# run's keys (see guest/xenlab-sshd); none is baked into the cached image.
rm -f "$R"/etc/ssh/ssh_host_*
install -m 0644 "$LAB_SRC/guest/domu1.cfg" "$R/root/lab/domu1.cfg"
cp "$OUT.tmp/vmlinuz" "$OUT.tmp/domU-initrd.gz" "$R/root/lab/"
echo dom0 > "$R/etc/hostname"

# --- 8. pack dom0's root as a cpio initramfs
say "packing dom0 initramfs ($(du -sh "$R" | cut -f1) unpacked)"
(cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | zstd -T0 -10 -q) > "$OUT.tmp/dom0-initrd.zst"

{
  echo "suite=$SUITE"
  echo "mirror=${MIRROR:-debootstrap-default}"
  echo "xen-hypervisor-$XV-amd64=$XEN_PKG_V"
  echo "xen-utils-$XV(dom0)=$XEN_UTILS_V"
  echo "linux-image-$KVER=$LINUX_PKG_V"
  echo "busybox-static=$BUSYBOX_PKG_V"
  echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ) in $(( $(date +%s) - t_start ))s"
  (cd "$OUT.tmp" && ls -l xen.elf vmlinuz dom0-initrd.zst domU-initrd.gz)
} > "$OUT.tmp/manifest.txt"
[ "$XEN_UTILS_V" = "$XEN_PKG_V" ] || say "WARNING: dom0 xen-utils $XEN_UTILS_V != hypervisor $XEN_PKG_V"

cd /
rm -rf "$OUT"; mv "$OUT.tmp" "$OUT"
unmount_work
rm -rf --one-file-system "$WORK"
say "done: $OUT"
cat "$OUT/manifest.txt" >&2
