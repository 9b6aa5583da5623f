#!/bin/sh
# Draws the test picture on /dev/fb0 and keeps it on screen for the host's screendump.
/e2e/bin/fbpattern /dev/fb0 || exit 1
echo "E2E-SCREEN-READY: fbdev"
sleep "${E2E_HOLD:-300}"
