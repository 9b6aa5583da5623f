#!/bin/sh
# Debian's kmscube: first a fixed number of frames (each one a page flip that the device must
# complete), then again in the background for the host's screendump.
kmscube -c 30 > /tmp/kmscube.log 2>&1
rc=$?
sed 's/^/kmscube: /' /tmp/kmscube.log
renderer="$(sed -n 's/^ *renderer: *"\(.*\)"$/\1/p' /tmp/kmscube.log | head -n 1)"
echo "E2E-GL-RENDERER: $renderer"
[ $rc -eq 0 ] || { echo "kmscube: exit status $rc"; exit 1; }
grep -q "^Rendered 30 frames" /tmp/kmscube.log || { echo "kmscube: did not render its frames"; exit 1; }
kmscube -c 1000000 > /tmp/kmscube2.log 2>&1 &
pid=$!
i=0
while ! grep -q "renderer:" /tmp/kmscube2.log && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
sleep 2
kill -0 $pid 2>/dev/null || { sed 's/^/kmscube: /' /tmp/kmscube2.log; exit 1; }
echo "E2E-SCREEN-READY: kmscube"
sleep "${E2E_HOLD:-300}"
