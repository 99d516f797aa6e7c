#!/usr/bin/env bash
# Build (or load from cache) a PostgreSQL 15 image from Debian packages, for
# the docker scratch path: no image registry is reachable here. The rootfs
# tarball is cached under $CACHE_DIR, keyed by this folder's contents, so a
# later run imports it in seconds instead of running debootstrap again.
# Usage: ci/postgres-image/build.sh [IMAGE]   (default verifier-postgres:15)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
image=${1:-verifier-postgres:15}
cache_dir=${VERIFIER_CI_CACHE:-/var/cache/verifier-ci}
key=$(cat "$here"/*.sh | sha256sum | cut -c1-16)
rootfs_tar="$cache_dir/postgres15-rootfs-$key.tar"
label="verifier.build-key=$key"

if [ "$(docker image inspect -f '{{index .Config.Labels "verifier.build-key"}}' "$image" 2>/dev/null)" = "$key" ]; then
  echo "image $image is present (build key $key)"
  exit 0
fi
mkdir -p "$cache_dir"
if [ ! -s "$rootfs_tar" ]; then
  work=$(mktemp -d /var/tmp/verifier-rootfs.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  echo "debootstrap bookworm with postgresql-15 into $work (about a minute)"
  debootstrap --variant=minbase --include=postgresql-15 bookworm "$work/root" \
    http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 || {
      tail -20 "$work/debootstrap.log"; exit 1; }
  install -m 0755 "$here/entrypoint.sh" "$work/root/usr/local/bin/docker-entrypoint.sh"
  # Debian's package starts a cluster of its own; the entrypoint makes ours.
  rm -rf "$work/root/var/lib/postgresql/15" "$work/root/etc/postgresql/15"
  rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
  tar -C "$work/root" -cf "$rootfs_tar.partial" .
  mv "$rootfs_tar.partial" "$rootfs_tar"
fi
docker import \
  --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
  --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'EXPOSE 5432' \
  --change "LABEL $label" \
  "$rootfs_tar" "$image" >/dev/null
echo "image $image imported from $rootfs_tar"
