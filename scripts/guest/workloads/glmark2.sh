#!/bin/sh
# Debian's glmark2-es2-drm (GLES 2 through GBM/KMS: Mesa's virgl driver when the device offers
# virgl, llvmpipe in the guest otherwise), off-screen, a fixed list of scenes of a fixed length
# each, as users benchmark a GPU. Prints the renderer, each scene's FPS and the score.
# e2e.glmark_secs=SECONDS sets each scene's length (default 3).
secs="${E2E_GLMARK2_SECS:-3}"
glmark2-es2-drm --off-screen --size 640x480 \
    -b "build:use-vbo=true:duration=$secs" \
    -b "texture:texture-filter=linear:duration=$secs" \
    -b "shading:shading=phong:duration=$secs" \
    -b "effect2d:kernel=0,1,0;1,-4,1;0,1,0;:duration=$secs" \
    > /tmp/glmark2.log 2>&1
rc=$?
sed 's/^/glmark2: /' /tmp/glmark2.log
renderer="$(sed -n 's/^ *GL_RENDERER: *//p' /tmp/glmark2.log | head -n 1)"
echo "E2E-GL-RENDERER: $renderer"
score="$(sed -n 's/.*glmark2 Score: *\([0-9][0-9]*\).*/\1/p' /tmp/glmark2.log | tail -n 1)"
# One line per scene: "[build] use-vbo=true: FPS: 123 FrameTime: 8.130 ms"
sed -n 's/^\[\([a-z0-9]*\)\].*FPS: *\([0-9][0-9]*\).*/E2E-GLMARK2-SCENE: \1 \2/p' /tmp/glmark2.log
echo "E2E-GLMARK2-SCORE: ${score:-none}"
[ $rc -eq 0 ] && [ -n "$score" ] || { echo "glmark2: exit status $rc"; exit 1; }
