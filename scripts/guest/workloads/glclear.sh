#!/bin/sh
# GLES through GBM/EGL/KMS (Mesa's virgl driver when the device offers virgl): known colours on screen.
exec /e2e/bin/glclear --hold "${E2E_HOLD:-300}"
