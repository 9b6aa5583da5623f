/* Guest program: renders one frame with OpenGL ES 2 through GBM + EGL on /dev/dri/card0 and shows
 * it with KMS. The frame is cleared to COLOR_A, then the bottom-left quarter (GL coordinates: the
 * scissor box at the origin) to COLOR_B, so the host can check colours and orientation exactly.
 * Prints GL_VENDOR/GL_RENDERER/GL_VERSION, then "E2E-SCREEN-READY" once the frame is on the CRTC,
 * and keeps it there for --hold seconds (default 300) so that the host can take a screendump. */
#include <EGL/egl.h>
#include <EGL/eglext.h>
#include <GLES2/gl2.h>
#include <errno.h>
#include <fcntl.h>
#include <gbm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xf86drm.h>
#include <xf86drmMode.h>

#define COLOR_A_R 0x20
#define COLOR_A_G 0x80
#define COLOR_A_B 0xe0
#define COLOR_B_R 0xe0
#define COLOR_B_G 0x40
#define COLOR_B_B 0x20

static int fail(const char *what)
{
    printf("glclear: FAILED: %s (errno %s)\n", what, strerror(errno));
    fflush(stdout);
    return 1;
}

int main(int argc, char **argv)
{
    const char *dev = "/dev/dri/card0";
    unsigned hold = 300;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--hold") && i + 1 < argc)
            hold = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--device") && i + 1 < argc)
            dev = argv[++i];
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    int fd = open(dev, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return fail("open drm device");
    drmModeRes *res = drmModeGetResources(fd);
    if (!res)
        return fail("drmModeGetResources");
    drmModeConnector *conn = NULL;
    for (int i = 0; i < res->count_connectors; i++) {
        conn = drmModeGetConnector(fd, res->connectors[i]);
        if (conn && conn->connection == DRM_MODE_CONNECTED && conn->count_modes > 0)
            break;
        drmModeFreeConnector(conn);
        conn = NULL;
    }
    if (!conn)
        return fail("no connected connector");
    drmModeModeInfo mode = conn->modes[0];
    for (int i = 0; i < conn->count_modes; i++)
        if (conn->modes[i].type & DRM_MODE_TYPE_PREFERRED) {
            mode = conn->modes[i];
            break;
        }
    uint32_t crtc_id = 0;
    drmModeEncoder *enc = conn->encoder_id ? drmModeGetEncoder(fd, conn->encoder_id) : NULL;
    if (enc && enc->crtc_id)
        crtc_id = enc->crtc_id;
    for (int e = 0; !crtc_id && e < conn->count_encoders; e++) {
        drmModeEncoder *en = drmModeGetEncoder(fd, conn->encoders[e]);
        for (int c = 0; en && c < res->count_crtcs; c++)
            if (en->possible_crtcs & (1u << c)) {
                crtc_id = res->crtcs[c];
                break;
            }
        drmModeFreeEncoder(en);
    }
    if (!crtc_id)
        return fail("no crtc");
    uint32_t w = mode.hdisplay, h = mode.vdisplay;
    printf("E2E-GL-MODE: %ux%u connector=%u crtc=%u\n", w, h, conn->connector_id, crtc_id);

    struct gbm_device *gbm = gbm_create_device(fd);
    if (!gbm)
        return fail("gbm_create_device");
    struct gbm_surface *gs = gbm_surface_create(gbm, w, h, GBM_FORMAT_XRGB8888,
                                                GBM_BO_USE_SCANOUT | GBM_BO_USE_RENDERING);
    if (!gs)
        return fail("gbm_surface_create");

    PFNEGLGETPLATFORMDISPLAYEXTPROC get_platform_display =
        (PFNEGLGETPLATFORMDISPLAYEXTPROC)eglGetProcAddress("eglGetPlatformDisplayEXT");
    EGLDisplay dpy = get_platform_display
                         ? get_platform_display(EGL_PLATFORM_GBM_KHR, gbm, NULL)
                         : eglGetDisplay((EGLNativeDisplayType)gbm);
    EGLint major, minor;
    if (dpy == EGL_NO_DISPLAY || !eglInitialize(dpy, &major, &minor))
        return fail("eglInitialize");
    eglBindAPI(EGL_OPENGL_ES_API);
    const EGLint cfg_attrs[] = {EGL_SURFACE_TYPE, EGL_WINDOW_BIT, EGL_RED_SIZE, 8, EGL_GREEN_SIZE, 8,
                                EGL_BLUE_SIZE, 8, EGL_ALPHA_SIZE, 0, EGL_RENDERABLE_TYPE,
                                EGL_OPENGL_ES2_BIT, EGL_NONE};
    EGLConfig cfgs[64];
    EGLint n = 0;
    if (!eglChooseConfig(dpy, cfg_attrs, cfgs, 64, &n) || n == 0)
        return fail("eglChooseConfig");
    EGLConfig cfg = NULL;
    for (int i = 0; i < n; i++) {
        EGLint vid = 0;
        if (eglGetConfigAttrib(dpy, cfgs[i], EGL_NATIVE_VISUAL_ID, &vid) &&
            (uint32_t)vid == GBM_FORMAT_XRGB8888) {
            cfg = cfgs[i];
            break;
        }
    }
    if (!cfg)
        return fail("no XRGB8888 EGL config");
    const EGLint ctx_attrs[] = {EGL_CONTEXT_CLIENT_VERSION, 2, EGL_NONE};
    EGLContext ctx = eglCreateContext(dpy, cfg, EGL_NO_CONTEXT, ctx_attrs);
    if (ctx == EGL_NO_CONTEXT)
        return fail("eglCreateContext");
    EGLSurface surf = eglCreateWindowSurface(dpy, cfg, (EGLNativeWindowType)gs, NULL);
    if (surf == EGL_NO_SURFACE)
        return fail("eglCreateWindowSurface");
    if (!eglMakeCurrent(dpy, surf, surf, ctx))
        return fail("eglMakeCurrent");

    printf("E2E-GL-VENDOR: %s\n", (const char *)glGetString(GL_VENDOR));
    printf("E2E-GL-RENDERER: %s\n", (const char *)glGetString(GL_RENDERER));
    printf("E2E-GL-VERSION: %s\n", (const char *)glGetString(GL_VERSION));

    glViewport(0, 0, (GLsizei)w, (GLsizei)h);
    glDisable(GL_SCISSOR_TEST);
    glClearColor(COLOR_A_R / 255.0f, COLOR_A_G / 255.0f, COLOR_A_B / 255.0f, 1.0f);
    glClear(GL_COLOR_BUFFER_BIT);
    glEnable(GL_SCISSOR_TEST);
    glScissor(0, 0, (GLsizei)(w / 2), (GLsizei)(h / 2));
    glClearColor(COLOR_B_R / 255.0f, COLOR_B_G / 255.0f, COLOR_B_B / 255.0f, 1.0f);
    glClear(GL_COLOR_BUFFER_BIT);
    glDisable(GL_SCISSOR_TEST);
    unsigned char px[2][4] = {{0}};
    glReadPixels(0, 0, 1, 1, GL_RGBA, GL_UNSIGNED_BYTE, px[0]);
    glReadPixels((GLint)w - 1, (GLint)h - 1, 1, 1, GL_RGBA, GL_UNSIGNED_BYTE, px[1]);
    printf("E2E-GL-READBACK: origin=%02x%02x%02x top-right=%02x%02x%02x glError=0x%x\n", px[0][0],
           px[0][1], px[0][2], px[1][0], px[1][1], px[1][2], glGetError());
    if (!eglSwapBuffers(dpy, surf))
        return fail("eglSwapBuffers");

    struct gbm_bo *bo = gbm_surface_lock_front_buffer(gs);
    if (!bo)
        return fail("gbm_surface_lock_front_buffer");
    uint32_t fb_id = 0;
    if (drmModeAddFB(fd, w, h, 24, 32, gbm_bo_get_stride(bo), gbm_bo_get_handle(bo).u32, &fb_id))
        return fail("drmModeAddFB");
    uint32_t conn_id = conn->connector_id;
    if (drmModeSetCrtc(fd, crtc_id, fb_id, 0, 0, &conn_id, 1, &mode))
        return fail("drmModeSetCrtc");
    printf("E2E-SCREEN-READY: glclear %ux%u\n", w, h);
    fflush(stdout);
    sleep(hold);
    return 0;
}
