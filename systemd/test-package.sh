#!/usr/bin/env bash
# The amd64 package under a real systemd: a Debian bookworm root (debootstrap) booted in qemu
# as its initramfs, with the vivid V4L2 driver; inside it: `dpkg -i` the package, the unit
# starts (Type=notify) and /health/ answers, a door camera on /dev/video0 streams under the
# unit's device policy, SIGSTOP makes the watchdog restart it, `systemctl stop` saves the
# snapshot, `dpkg -r` keeps /var/lib/facegate, `dpkg -P` removes it; the unit's security score
# on the running system. Not part of CI (downloads ~150 MB, boots a VM for ~3 min); run by hand:
#   systemd/test-package.sh            (PKG_WORK=DIR keeps the root and packages between runs)
# Needs: cargo-deb, debootstrap, qemu-system-x86, cpio, apt-get download.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=${PKG_WORK:-/tmp/facegate-pkgtest}
mkdir -p "$work"

cargo build --release --locked -p facegate-daemon -p facegate-sync
cargo deb -p facegate-daemon --no-build --strip --output "$work/" >/dev/null
deb=$(ls -t "$work"/facegate_*_amd64.deb | head -1)
echo "package: $deb ($(du -h "$deb" | cut -f1))"

[ -x "$work/root/bin/sh" ] || debootstrap --variant=minbase --include=systemd,systemd-sysv,udev,kmod,curl,procps \
  bookworm "$work/root" http://deb.debian.org/debian
# Debian's kernel and its vivid modules.
mkdir -p "$work/pkgs"
(cd "$work/pkgs" && { ls linux-image-*.deb >/dev/null 2>&1 || apt-get download \
  "$(apt-cache depends linux-image-amd64 | sed -n 's/ *Depends: \(linux-image-[0-9].*\)/\1/p' | head -1)"; })
rm -rf "$work/k" && mkdir -p "$work/k" && dpkg-deb -x "$work"/pkgs/linux-image-*.deb "$work/k"
kver=$(ls "$work/k/lib/modules")

stage=$work/stage
rm -rf "$stage" && cp -a "$work/root" "$stage"
ln -sf /lib/systemd/systemd "$stage/init"
echo facegate-vm > "$stage/etc/hostname"
cp "$deb" "$stage/root/facegate.deb"
for m in mc videodev videobuf2-common videobuf2-v4l2 rc-core cec v4l2-dv-timings v4l2-tpg \
         videobuf2-memops videobuf2-dma-contig videobuf2-vmalloc vivid; do
  f=$(find "$work/k/lib/modules/$kver" -name "$m.ko" | head -1)
  cp "$f" "$stage/root/"; echo "/root/$m.ko" >> "$stage/root/modules.txt"
done
cat > "$stage/root/vmtest.sh" <<'VMTEST'
#!/bin/sh
say() { echo "VMTEST: $*"; }
health() { for i in $(seq 120); do curl -sf http://127.0.0.1:8080/health/ >/dev/null && return 0; sleep 1; done; return 1; }
for m in $(cat /root/modules.txt); do insmod "$m"; done
udevadm settle; ls -l /dev/video0
dpkg -i /root/facegate.deb > /root/dpkg.log 2>&1; say "dpkg -i exit $?"
grep -q 'operators set' /root/dpkg.log && say "postinst printed the first steps"
getent passwd facegate-sync >/dev/null && say "sync user created; sync unit $(systemctl is-enabled facegate-sync 2>&1)"
health && say "health answers after install: $(systemctl is-active facegate)"
say "status line: $(systemctl show -p StatusText --value facegate)"
# A door camera on vivid, under the unit's DevicePolicy=closed + DeviceAllow=char-video4linux.
cat >> /etc/facegate/facegate.toml <<'TOML'
[[cameras]]
source = "front=v4l:/dev/video0:640x480@15"
door = true
TOML
mkdir -p /etc/systemd/system/facegate.service.d
printf '[Service]\nWatchdogSec=8\n' > /etc/systemd/system/facegate.service.d/test.conf
systemctl daemon-reload; systemctl restart facegate; health
sleep 10
curl -s http://127.0.0.1:8080/metrics | grep 'facegate_camera_frames_total{camera="front"' | sed 's/^/VMTEST: metrics /'
say "security: $(systemd-analyze security facegate 2>/dev/null | tail -1)"
pid=$(systemctl show -p MainPID --value facegate)
systemctl kill -s SIGSTOP facegate
sleep 25
health
say "watchdog: pid $pid -> $(systemctl show -p MainPID --value facegate), NRestarts=$(systemctl show -p NRestarts --value facegate)"
journalctl -u facegate --no-pager | grep -i 'watchdog timeout' | tail -1 | sed 's/^/VMTEST: journal /'
systemctl stop facegate
journalctl -u facegate --no-pager | grep -c 'saving the index snapshot' | sed 's/^/VMTEST: snapshots saved at stop: /'
journalctl -u facegate --no-pager -o verbose -n 50 | grep -m1 'SYSLOG_IDENTIFIER=facegate' | sed 's/^ */VMTEST: journal field /'
journalctl -u facegate --no-pager -o cat | grep -v '^$' | tail -n 25 | sed 's/^/VMTEST: log /'
dpkg -r facegate > /dev/null 2>&1
[ -d /var/lib/private/facegate ] && say "remove kept $(ls /var/lib/private/facegate | tr '\n' ' ')"
dpkg -P facegate > /dev/null 2>&1
[ ! -e /var/lib/private/facegate ] && [ ! -e /var/lib/facegate ] && say "purge removed the data"
say "done"
systemctl poweroff -f
VMTEST
chmod +x "$stage/root/vmtest.sh"
cat > "$stage/etc/systemd/system/vmtest.service" <<'UNIT'
[Unit]
Description=facegate package test
After=multi-user.target systemd-udevd.service
[Service]
Type=oneshot
ExecStart=/root/vmtest.sh
StandardOutput=journal+console
StandardError=journal+console
[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/vmtest.service "$stage/etc/systemd/system/multi-user.target.wants/vmtest.service"
(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"
log=$work/console.log
timeout 1200 qemu-system-x86_64 -accel tcg -cpu max -m 3072 -smp 2 -nographic -no-reboot \
  -kernel "$work/k/boot/vmlinuz-$kver" -initrd "$work/initrd.gz" \
  -append "console=ttyS0 rdinit=/init panic=-1 systemd.show_status=0" > "$log" 2>&1 || true
grep 'VMTEST' "$log" | tr -d '\r'
for want in "health answers after install" 'kind="captured"} [1-9]' "kept" "purge removed the data" \
            "sync user created; sync unit disabled" \
            "NRestarts=[1-9]" "snapshots saved at stop: [1-9]" "done"; do
  grep -q "VMTEST: .*$want" "$log" || { echo "FAIL: no '$want' in $log" >&2; exit 1; }
done
echo "OK ($log)"
