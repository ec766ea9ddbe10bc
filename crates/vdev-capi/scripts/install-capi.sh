#!/bin/sh
# Install libvdev (the C API of vdev): header, shared and static library, pkg-config file.
#
#   scripts/install-capi.sh PREFIX [LIBDIR]
#
# Builds crates/vdev-capi in release mode and installs into PREFIX/include/vdev.h,
# PREFIX/lib/libvdev.so, PREFIX/lib/libvdev.a and PREFIX/lib/pkgconfig/vdev.pc. With LIBDIR,
# installs the libvdev.so and libvdev.a already built there instead of building (the tests
# use this with target/debug). Then:
#
#   PKG_CONFIG_PATH=PREFIX/lib/pkgconfig cc app.c $(pkg-config --cflags --libs vdev)
#   LD_LIBRARY_PATH=PREFIX/lib ./a.out      (unless PREFIX/lib is on the loader's path)
set -eu

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 PREFIX [LIBDIR]" >&2
    exit 2
fi
prefix=$1
crate=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "$crate/../.." && pwd)

if [ $# -eq 2 ]; then
    libdir=$2
else
    (cd "$root" && cargo build --release -p vdev-capi)
    libdir=${CARGO_TARGET_DIR:-$root/target}/release
fi
for f in libvdev.so libvdev.a; do
    if [ ! -f "$libdir/$f" ]; then
        echo "$0: $libdir/$f is missing; build with cargo build -p vdev-capi" >&2
        exit 1
    fi
done

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")
install -d "$prefix/include" "$prefix/lib/pkgconfig"
install -m 644 "$crate/include/vdev.h" "$prefix/include/vdev.h"
install -m 755 "$libdir/libvdev.so" "$prefix/lib/libvdev.so"
install -m 644 "$libdir/libvdev.a" "$prefix/lib/libvdev.a"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" "$crate/vdev.pc.in" \
    > "$prefix/lib/pkgconfig/vdev.pc"
echo "installed libvdev $version into $prefix"
