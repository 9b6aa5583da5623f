#!/bin/sh
# The benchmark's page-flip workload: Debian's kmscube for E2E_FLIPS frames (kernel command line
# e2e.flips=N, default 300), each one a page flip through KMS that the device must complete (the
# flip's RESOURCE_FLUSH and its answer). Lines for the host:
#   E2E-GL-RENDERER: <GL_RENDERER>
#   E2E-MODE: <the connector's preferred mode, which kmscube flips at>
#   E2E-PAGEFLIP: <frames> <seconds> <frames per second>   (kmscube's count, after its first frame)
flips="${E2E_FLIPS:-300}"
kmscube -c "$flips" > /tmp/kmscube.log 2>&1
rc=$?
grep -v 'extensions:' /tmp/kmscube.log | sed 's/^/kmscube: /'
renderer="$(sed -n 's/^ *renderer: *"\(.*\)"$/\1/p' /tmp/kmscube.log | head -n 1)"
echo "E2E-GL-RENDERER: $renderer"
echo "E2E-MODE: $(cat /sys/class/drm/card*-*/modes 2>/dev/null | head -n 1)"
[ $rc -eq 0 ] || { echo "kmscube: exit status $rc"; exit 1; }
line="$(sed -n 's/.*Rendered \([0-9]*\) frames in \([0-9.]*\) sec (\([0-9.]*\) fps).*/\1 \2 \3/p' /tmp/kmscube.log | tail -n 1)"
[ -n "$line" ] || { echo "kmscube: no 'Rendered N frames' line"; exit 1; }
echo "E2E-PAGEFLIP: $line"
