#!/bin/sh
# Debian 12's CRIU (3.17) fails `criu check` on kernel 6.x ("vdso: Failed to fill self
# vdso symtable"); Debian 13's (4.1) works. This unpacks Debian 13's criu and the
# libraries it needs (its glibc included) into DEST, without installing anything, and
# writes DEST/bin/criu, which runs it with that glibc's loader. Prints DEST/bin/criu
# when `DEST/bin/criu check` passes; fails otherwise. Usage: tests/criu-from-trixie.sh DEST
set -eu
[ "$(dpkg --print-architecture)" = amd64 ] || { echo "only amd64 is set up" >&2; exit 1; }
dest=$(realpath -m "$1")
wrapper="$dest/bin/criu"
if [ -x "$wrapper" ] && "$wrapper" check >/dev/null 2>&1; then
    echo "$wrapper"
    exit 0
fi
apt="$dest/apt"
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$dest/debs" "$dest/root" "$dest/bin"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    >"$apt/sources.list"
set -- -o "Dir::Etc::sourcelist=$apt/sources.list" -o "Dir::Etc::sourceparts=-" \
    -o "Dir::State::lists=$apt/lists" -o "Dir::Cache=$apt/cache" \
    -o "Dir::State::status=/var/lib/dpkg/status" -o "APT::Sandbox::User=root"
apt-get "$@" update -qq >&2
# criu's Depends, and theirs, as Debian 13 has them.
(cd "$dest/debs" && apt-get "$@" download -qq criu libcompel1 libc6 libgnutls30t64 \
    libnftables1 libprotobuf-c1 libnet1 libnl-3-200 libbsd0 libuuid1 libmnl0 libnftnl11 \
    libjansson4 libxtables12 libgmp10 libhogweed6t64 libnettle8t64 libidn2-0 libunistring5 \
    libp11-kit0 libtasn1-6 libffi8 libmd0 libedit2 libtinfo6 libbpf1 libelf1t64 zlib1g \
    libzstd1 >&2)
for d in "$dest"/debs/*.deb; do dpkg-deb -x "$d" "$dest/root"; done
lib="$dest/root/usr/lib/x86_64-linux-gnu"
printf '#!/bin/sh\nexec %s/ld-linux-x86-64.so.2 --library-path %s %s/usr/sbin/criu "$@"\n' \
    "$lib" "$lib" "$dest/root" >"$wrapper"
chmod 755 "$wrapper"
"$wrapper" check >&2
echo "$wrapper"
