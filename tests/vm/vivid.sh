#!/usr/bin/env bash
# The V4L2 path on a real V4L2 driver: boots Debian's kernel in qemu with the `vivid` test
# driver loaded, and runs the release `facegate` binary in an initramfs (busybox, the binary and
# the shared libraries it links, the models): `facegate cameras` must list vivid's formats, and
# `facegate run --camera v4l:/dev/video0` must stream frames (counted in /metrics).
# Not part of CI (it downloads two Debian packages and boots a VM); run by hand:
#   cargo build --release -p facegate-daemon && tests/vm/vivid.sh
# Needs: qemu-system-x86 (KVM if /dev/kvm is there, else slow TCG), apt-get download, cpio, gzip.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
bin=$repo/target/release/facegate
[ -x "$bin" ] || { echo "build first: cargo build --release -p facegate-daemon" >&2; exit 1; }
work=${VIVID_WORK:-$(mktemp -d /tmp/facegate-vivid.XXXXXX)}
mkdir -p "$work/pkgs"
cd "$work/pkgs"
kernel_pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/ *Depends: \(linux-image-[0-9].*\)/\1/p' | head -1)
ls ./*.deb >/dev/null 2>&1 || apt-get download "$kernel_pkg" busybox-static
rm -rf "$work/k" "$work/bb" "$work/root"
mkdir -p "$work/k" "$work/bb"
dpkg-deb -x linux-image-*.deb "$work/k"
dpkg-deb -x busybox-static_*.deb "$work/bb"
kver=$(ls "$work/k/lib/modules")
vmlinuz=$work/k/boot/vmlinuz-$kver

root=$work/root
mkdir -p "$root"/{bin,proc,sys,dev,tmp,etc,lib64,facegate/bin,facegate/share/facegate}
cp "$work/bb/bin/busybox" "$root/bin/busybox"
# vivid and what it depends on, in load order (from each module's .modinfo `depends=`).
python3 - "$work/k" "$kver" > "$root/modorder.txt" <<'PY'
import os, re, sys
base, kver = sys.argv[1], sys.argv[2]
mods = os.path.join(base, "lib/modules", kver)
paths = {}
for r, _, fs in os.walk(mods):
    for f in fs:
        if f.endswith(".ko"):
            paths[f[:-3].replace("-", "_")] = os.path.join(r, f)
order = []
def visit(n):
    n = n.replace("-", "_")
    if n in order:
        return
    m = re.search(rb"\x00depends=([^\x00]*)\x00", open(paths[n], "rb").read())
    for d in filter(None, (m.group(1).decode() if m else "").split(",")):
        visit(d)
    order.append(n)
visit("vivid")
for n in order:
    print(os.path.relpath(paths[n], base))
PY
while read -r m; do mkdir -p "$root/$(dirname "$m")"; cp "$work/k/$m" "$root/$m"; done < "$root/modorder.txt"
# The binary, its shared libraries and the models.
cp "$bin" "$root/facegate/bin/facegate"
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
done
cp -r "$repo/models" "$root/facegate/share/facegate/models"
cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
ip link set lo up
for m in $(cat /modorder.txt); do insmod "/$m" || echo "insmod $m failed"; done
sleep 1
echo "=== video nodes"; ls /dev/video* 2>&1
echo "=== facegate cameras"; /facegate/bin/facegate -q cameras
key=$(/facegate/bin/facegate -q --data-dir /tmp/fg clients add vm --json)
api_key=$(echo "$key" | sed -n 's/.*"api_key": *"\([^"]*\)".*/\1/p')
api_secret=$(echo "$key" | sed -n 's/.*"api_secret": *"\([^"]*\)".*/\1/p')
echo "=== facegate run --camera v4l:/dev/video0"
/facegate/bin/facegate --data-dir /tmp/fg run --listen 127.0.0.1:8080 --camera v4l:/dev/video0:640x480@15 > /tmp/run.out 2> /tmp/run.err &
for i in $(seq 60); do wget -qO- http://127.0.0.1:8080/health/ > /tmp/health 2>/dev/null && break; sleep 1; done
sleep 8
echo "=== /metrics (camera)"; wget -qO- http://127.0.0.1:8080/metrics | grep facegate_camera
echo "=== /health/"; wget -qO- http://127.0.0.1:8080/health/; echo
jwt=$(wget -qO- --header 'Content-Type: application/json' \
  --post-data "{\"api_key\":\"$api_key\",\"api_secret\":\"$api_secret\"}" \
  http://127.0.0.1:8080/api/auth/client/ | sed -n 's/.*"jwt_token": *"\([^"]*\)".*/\1/p')
wget -qO /tmp/snap.jpg --header "Authorization: Bearer $jwt" http://127.0.0.1:8080/api/cameras/cam0/snapshot.jpg
echo "=== snapshot $(wc -c < /tmp/snap.jpg) bytes"; base64 /tmp/snap.jpg; echo "=== end snapshot"
echo "=== daemon log"; tail -n 5 /tmp/run.err
echo "=== vivid done"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"
# KVM only when asked (VIVID_KVM=1): some hosts expose a /dev/kvm that cannot run a guest.
accel=(-accel tcg -cpu max); [ "${VIVID_KVM:-0}" = 1 ] && accel=(-accel kvm -cpu host)
log=$work/console.log
timeout 600 qemu-system-x86_64 "${accel[@]}" -m 2048 -smp 2 -nographic -no-reboot \
  -kernel "$vmlinuz" -initrd "$work/initrd.gz" -append "console=ttyS0 quiet panic=-1" | tee "$log"
grep -q "facegate uses: YUYV" "$log" || { echo "FAIL: facegate cameras did not list vivid's YUYV" >&2; exit 1; }
captured=$(sed -n 's/^facegate_camera_frames_total{camera="cam0",kind="captured"} //p' "$log" | tr -d '\r')
[ "${captured:-0}" -gt 10 ] || { echo "FAIL: no frames streamed from /dev/video0" >&2; exit 1; }
sed -n '/^=== snapshot/,/^=== end snapshot/p' "$log" | sed '1d;$d' | tr -d '\r' | base64 -d > "$work/snapshot.jpg" \
  || { echo "FAIL: no snapshot" >&2; exit 1; }
echo "OK: vivid listed, $captured frames captured from /dev/video0, snapshot $work/snapshot.jpg ($log)"
