#!/bin/sh
# Debian's kmscube: first a fixed number of frames (each one a page flip that the device must
# complete), then again in the background for the host's screendump.
kmscube -c 30 > /tmp/kmscube.log 2>&1
rc=$?
grep -v 'extensions:' /tmp/kmscube.log | sed 's/^/kmscube: /'
renderer="$(sed -n 's/^ *renderer: *"\(.*\)"$/\1/p' /tmp/kmscube.log | head -n 1)"
echo "E2E-GL-RENDERER: $renderer"
[ $rc -eq 0 ] || { echo "kmscube: exit status $rc"; exit 1; }
# kmscube prints "Rendered N frames in T sec" along the way; the last N counts the flips after the first.
frames="$(sed -n 's/.*Rendered \([0-9]*\) frames.*/\1/p' /tmp/kmscube.log | tail -n 1)"
echo "E2E-KMSCUBE-FRAMES: ${frames:-0}"
[ "${frames:-0}" -ge 25 ] || { echo "kmscube: did not render its frames"; exit 1; }
# kmscube stops on input from stdin (EOF included): give it a pipe that stays silent.
sleep 100000 | kmscube -c 1000000 > /tmp/kmscube2.log 2>&1 &
pid=$!
i=0
while ! grep -q "renderer:" /tmp/kmscube2.log && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
sleep 2
pidof kmscube >/dev/null || { grep -v 'extensions:' /tmp/kmscube2.log | sed 's/^/kmscube: /'; exit 1; }
echo "E2E-SCREEN-READY: kmscube"
sleep "${E2E_HOLD:-300}"
