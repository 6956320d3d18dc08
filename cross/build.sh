#!/usr/bin/env bash
# Cross-builds facegate for the terminal targets, packages them (.deb for arm64 / armhf, with
# cargo-deb) and smoke-tests the packaged binaries under qemu-user.
# Usage: cross/build.sh [amd64|aarch64|armv7]...   (default: all three); packages land in
# target/deb/ (amd64 is the native build; its binary runs without qemu).
# Needs (Debian): gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross
#                 gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user
#                 libclang1-14 (bindgen for the v4l crate); cargo-deb (`cargo install cargo-deb`)
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(amd64 aarch64 armv7)
for t in "${targets[@]}"; do
  if [ "$t" = amd64 ]; then
    cargo build --release --locked -p facegate-daemon -p facegate-sync
    cargo deb -p facegate-daemon --no-build --strip --output target/deb/
    deb=$(ls -t target/deb/facegate_*_amd64.deb | head -1)
    echo "$deb: $(du -h "$deb" | cut -f1)"
    pkg=$(mktemp -d); dpkg-deb -x "$deb" "$pkg"
    "$pkg/usr/bin/facegate" -q detect ../shared/data/photos/group_t1.jpg
    rm -rf "$pkg"
    continue
  fi
  case "$t" in
    aarch64) triple=aarch64-unknown-linux-gnu; qemu=qemu-aarch64; cpu=cortex-a72; sysroot=/usr/aarch64-linux-gnu ;;
    armv7) triple=armv7-unknown-linux-gnueabihf; qemu=qemu-arm; cpu=cortex-a15; sysroot=/usr/arm-linux-gnueabihf ;;
    *) echo "unknown target $t (amd64, aarch64 or armv7)" >&2; exit 2 ;;
  esac
  rustup target add "$triple"
  cargo build --release --locked --target "$triple" -p facegate-daemon -p facegate-sync
  cargo deb -p facegate-daemon --no-build --strip --target "$triple" --output target/deb/
  deb=$(ls -t target/deb/facegate_*_"$(case $t in aarch64) echo arm64;; armv7) echo armhf;; esac)".deb | head -1)
  echo "$deb: $(du -h "$deb" | cut -f1)"
  pkg=$(mktemp -d); dpkg-deb -x "$deb" "$pkg"
  # The packaged binary with the packaged models (found next to it: ../share/facegate/models).
  QEMU_CPU=$cpu QEMU_LD_PREFIX="$sysroot" "$qemu" "$pkg/usr/bin/facegate" -q detect ../shared/data/photos/group_t1.jpg
  rm -rf "$pkg"
  bin="target/$triple/release/facegate"
  file "$bin"
  # The default aarch64 qemu CPU has SVE, which qemu emulates very slowly.
  QEMU_CPU=$cpu QEMU_LD_PREFIX="$sysroot" "$qemu" "$bin" detect ../shared/data/photos/astronaut.png --json
  # The API server under emulation: start, /health/, the OpenAPI document, SIGTERM.
  data=$(mktemp -d)
  out="$data/stdout"
  QEMU_CPU=$cpu QEMU_LD_PREFIX="$sysroot" "$qemu" "$bin" --data-dir "$data" run --listen 127.0.0.1:0 >"$out" &
  pid=$!
  for _ in $(seq 600); do grep -q listening "$out" 2>/dev/null && break; sleep 0.5; done
  base=$(sed -n 's/^listening on //p' "$out")
  [ -n "$base" ] || { echo "$t: the server did not start" >&2; kill "$pid"; exit 1; }
  for _ in $(seq 120); do curl -sf "$base/health/" >/dev/null && break; sleep 0.5; done
  curl -sf "$base/health/"; echo
  curl -sf "$base/api/schema/" | head -c 120; echo
  kill -TERM "$pid"; wait "$pid"
  rm -rf "$data"
done
