//! EGL and GL, looked up at run time from libEGL (glvnd), for checking dmabufs: export a GL
//! texture (`EGL_MESA_image_dma_buf_export`) and import a dmabuf again
//! (`EGL_EXT_image_dma_buf_import[_modifiers]`) to read its pixels back, each step printed with
//! its EGL error so a failure says which call refused and why. Used by the `dmabuf-probe` program
//! and by `tests/dmabuf.rs`; no EGL crate is needed and nothing links against libEGL.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
#[cfg(test)]
use std::os::unix::fs::FileExt;

type EglDisplay = *mut c_void;
type EglContext = *mut c_void;
type EglImage = *mut c_void;
type EglInt = i32;

/// An `EGLDisplay` that EGL handed out (only this module makes one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Display(EglDisplay);

/// An `EGLContext` that EGL handed out (only this module makes one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context(EglContext);

/// An `EGLDeviceEXT` from `eglQueryDevicesEXT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device(*mut c_void);

/// Where [`Egl::open`] gets its display.
#[derive(Debug, Clone, Copy)]
pub enum Platform {
    /// `EGL_PLATFORM_SURFACELESS_MESA` with `EGL_DEFAULT_DISPLAY`.
    Surfaceless,
    /// `EGL_PLATFORM_DEVICE_EXT` with a device.
    Device(Device),
}

/// `EGL_NONE`.
pub const EGL_NONE: EglInt = 0x3038;
/// `EGL_VENDOR`.
pub const EGL_VENDOR: i32 = 0x3053;
/// `EGL_VERSION`.
pub const EGL_VERSION: i32 = 0x3054;
/// `EGL_EXTENSIONS`.
pub const EGL_EXTENSIONS: i32 = 0x3055;
const EGL_HEIGHT: EglInt = 0x3056;
const EGL_WIDTH: EglInt = 0x3057;
const EGL_OPENGL_API: c_uint = 0x30A2;
const EGL_CONTEXT_MAJOR_VERSION: EglInt = 0x3098;
const EGL_CONTEXT_MINOR_VERSION: EglInt = 0x30FB;
const EGL_GL_TEXTURE_2D_KHR: c_uint = 0x30B1;
const EGL_PLATFORM_SURFACELESS_MESA: c_uint = 0x31DD;
const EGL_PLATFORM_DEVICE_EXT: c_uint = 0x313F;
const EGL_DRM_DEVICE_FILE_EXT: EglInt = 0x3233;
const EGL_LINUX_DMA_BUF_EXT: c_uint = 0x3270;
const EGL_LINUX_DRM_FOURCC_EXT: EglInt = 0x3271;
const EGL_DMA_BUF_PLANE0_FD_EXT: EglInt = 0x3272;
const EGL_DMA_BUF_PLANE0_OFFSET_EXT: EglInt = 0x3273;
const EGL_DMA_BUF_PLANE0_PITCH_EXT: EglInt = 0x3274;
const EGL_DMA_BUF_PLANE0_MODIFIER_LO_EXT: EglInt = 0x3443;
const EGL_DMA_BUF_PLANE0_MODIFIER_HI_EXT: EglInt = 0x3444;
/// `DRM_FORMAT_MOD_INVALID`: no explicit modifier.
pub const MOD_INVALID: u64 = 0x00ff_ffff_ffff_ffff;
/// `DRM_FORMAT_MOD_LINEAR`.
pub const MOD_LINEAR: u64 = 0;

/// `GL_VENDOR`.
pub const GL_VENDOR: c_uint = 0x1F00;
/// `GL_RENDERER`.
pub const GL_RENDERER: c_uint = 0x1F01;
/// `GL_VERSION`.
pub const GL_VERSION: c_uint = 0x1F02;
const GL_TEXTURE_2D: c_uint = 0x0DE1;
const GL_RGBA8: c_uint = 0x8058;
const GL_RGBA: c_uint = 0x1908;
const GL_UNSIGNED_BYTE: c_uint = 0x1401;
const GL_FRAMEBUFFER: c_uint = 0x8D40;
const GL_COLOR_ATTACHMENT0: c_uint = 0x8CE0;
const GL_FRAMEBUFFER_COMPLETE: c_uint = 0x8CD5;
const GL_COLOR_BUFFER_BIT: c_uint = 0x4000;
const GL_TEXTURE_BINDING_2D: c_uint = 0x8069;
const GL_FRAMEBUFFER_BINDING: c_uint = 0x8CA6;
const GL_TEXTURE_MIN_FILTER: c_uint = 0x2801;
const GL_NEAREST: c_int = 0x2600;
const GL_PACK_ALIGNMENT: c_uint = 0x0D05;

type ExportQueryFn =
    unsafe extern "C" fn(EglDisplay, EglImage, *mut c_int, *mut c_int, *mut u64) -> c_uint;
type ExportFn =
    unsafe extern "C" fn(EglDisplay, EglImage, *mut c_int, *mut EglInt, *mut EglInt) -> c_uint;
type TexImage2dFn =
    unsafe extern "C" fn(c_uint, c_int, c_int, c_int, c_int, c_int, c_uint, c_uint, *const c_void);

/// The EGL and GL entry points used here.
pub struct Egl {
    get_error: unsafe extern "C" fn() -> EglInt,
    query_string: unsafe extern "C" fn(EglDisplay, EglInt) -> *const c_char,
    get_platform_display: unsafe extern "C" fn(c_uint, *mut c_void, *const EglInt) -> EglDisplay,
    initialize: unsafe extern "C" fn(EglDisplay, *mut EglInt, *mut EglInt) -> c_uint,
    bind_api: unsafe extern "C" fn(c_uint) -> c_uint,
    create_context:
        unsafe extern "C" fn(EglDisplay, *mut c_void, EglContext, *const EglInt) -> EglContext,
    make_current: unsafe extern "C" fn(EglDisplay, *mut c_void, *mut c_void, EglContext) -> c_uint,
    current_display: unsafe extern "C" fn() -> EglDisplay,
    current_context: unsafe extern "C" fn() -> EglContext,
    create_image: unsafe extern "C" fn(
        EglDisplay,
        EglContext,
        c_uint,
        *mut c_void,
        *const EglInt,
    ) -> EglImage,
    destroy_image: unsafe extern "C" fn(EglDisplay, EglImage) -> c_uint,
    export_query: Option<ExportQueryFn>,
    export: Option<ExportFn>,
    query_devices: Option<unsafe extern "C" fn(EglInt, *mut *mut c_void, *mut EglInt) -> c_uint>,
    query_device_string: Option<unsafe extern "C" fn(*mut c_void, EglInt) -> *const c_char>,
    gl_get_string: unsafe extern "C" fn(c_uint) -> *const u8,
    gl_get_error: unsafe extern "C" fn() -> c_uint,
    gl_gen_textures: unsafe extern "C" fn(c_int, *mut c_uint),
    gl_delete_textures: unsafe extern "C" fn(c_int, *const c_uint),
    gl_bind_texture: unsafe extern "C" fn(c_uint, c_uint),
    gl_tex_storage_2d: unsafe extern "C" fn(c_uint, c_int, c_uint, c_int, c_int),
    gl_tex_image_2d: TexImage2dFn,
    gl_tex_parameteri: unsafe extern "C" fn(c_uint, c_uint, c_int),
    gl_gen_framebuffers: unsafe extern "C" fn(c_int, *mut c_uint),
    gl_delete_framebuffers: unsafe extern "C" fn(c_int, *const c_uint),
    gl_bind_framebuffer: unsafe extern "C" fn(c_uint, c_uint),
    gl_framebuffer_texture_2d: unsafe extern "C" fn(c_uint, c_uint, c_uint, c_uint, c_int),
    gl_check_framebuffer_status: unsafe extern "C" fn(c_uint) -> c_uint,
    gl_clear_color: unsafe extern "C" fn(f32, f32, f32, f32),
    gl_clear: unsafe extern "C" fn(c_uint),
    gl_finish: unsafe extern "C" fn(),
    gl_read_pixels: unsafe extern "C" fn(c_int, c_int, c_int, c_int, c_uint, c_uint, *mut c_void),
    gl_pixel_storei: unsafe extern "C" fn(c_uint, c_int),
    gl_is_texture: unsafe extern "C" fn(c_uint) -> u8,
    gl_get_integerv: unsafe extern "C" fn(c_uint, *mut c_int),
    gl_image_target_texture_2d: Option<unsafe extern "C" fn(c_uint, EglImage)>,
}

/// Looks symbols up: first in libEGL itself, then through `eglGetProcAddress`.
struct Loader {
    lib: *mut c_void,
    get_proc: unsafe extern "C" fn(*const c_char) -> *mut c_void,
}

impl Loader {
    fn new() -> Result<Self, String> {
        // SAFETY: a NUL-terminated name; dlopen has no other preconditions.
        let lib = unsafe { libc::dlopen(c"libEGL.so.1".as_ptr(), libc::RTLD_NOW) };
        if lib.is_null() {
            return Err("dlopen libEGL.so.1 failed".into());
        }
        // SAFETY: `lib` is a live handle and the name is NUL-terminated.
        let p = unsafe { libc::dlsym(lib, c"eglGetProcAddress".as_ptr()) };
        if p.is_null() {
            return Err("libEGL.so.1 has no eglGetProcAddress".into());
        }
        // SAFETY: eglGetProcAddress has exactly this C prototype (EGL 1.5, 3.10); `p` is non-null.
        let get_proc = unsafe {
            std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*const c_char) -> *mut c_void>(
                p,
            )
        };
        Ok(Self { lib, get_proc })
    }

    fn raw(&self, name: &CStr) -> *mut c_void {
        // SAFETY: `self.lib` is a live handle (never closed) and the name is NUL-terminated.
        let p = unsafe { libc::dlsym(self.lib, name.as_ptr()) };
        if !p.is_null() {
            return p;
        }
        // SAFETY: eglGetProcAddress takes any NUL-terminated name and returns null if unknown.
        unsafe { (self.get_proc)(name.as_ptr()) }
    }

    /// The entry point `name` as the function-pointer type `F`.
    ///
    /// # Safety
    /// `F` must be an `unsafe extern "C" fn` type matching the C prototype of `name`.
    unsafe fn get<F: Copy>(&self, name: &CStr) -> Option<F> {
        assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
        let p = self.raw(name);
        if p.is_null() {
            return None;
        }
        // SAFETY: `F` is a pointer-sized function-pointer type matching the symbol (the caller's
        // contract) and `p` is non-null.
        Some(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
    }

    /// Like [`get`](Self::get), for entry points that cannot be done without.
    ///
    /// # Safety
    /// As for [`get`](Self::get).
    unsafe fn need<F: Copy>(&self, name: &CStr) -> Result<F, String> {
        // SAFETY: the caller's contract is forwarded.
        unsafe { self.get(name) }.ok_or_else(|| format!("no {}", name.to_string_lossy()))
    }
}

/// Name of an EGL error code.
pub fn egl_error_name(e: EglInt) -> String {
    let name = match e {
        0x3000 => "EGL_SUCCESS",
        0x3001 => "EGL_NOT_INITIALIZED",
        0x3002 => "EGL_BAD_ACCESS",
        0x3003 => "EGL_BAD_ALLOC",
        0x3004 => "EGL_BAD_ATTRIBUTE",
        0x3005 => "EGL_BAD_CONFIG",
        0x3006 => "EGL_BAD_CONTEXT",
        0x3007 => "EGL_BAD_CURRENT_SURFACE",
        0x3008 => "EGL_BAD_DISPLAY",
        0x3009 => "EGL_BAD_MATCH",
        0x300A => "EGL_BAD_NATIVE_PIXMAP",
        0x300B => "EGL_BAD_NATIVE_WINDOW",
        0x300C => "EGL_BAD_PARAMETER",
        0x300D => "EGL_BAD_SURFACE",
        0x300E => "EGL_CONTEXT_LOST",
        _ => "unknown",
    };
    format!("{name} ({e:#x})")
}

/// A DRM fourcc as its four letters and its value.
pub fn fourcc_name(f: u32) -> String {
    let b = f.to_le_bytes();
    format!(
        "{}{}{}{} ({f:#x})",
        b[0] as char, b[1] as char, b[2] as char, b[3] as char
    )
}

/// Whether the space-separated extension string `list` names `name`.
pub fn has_ext(list: &str, name: &str) -> bool {
    list.split_ascii_whitespace().any(|e| e == name)
}

fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        return "(null)".into();
    }
    // SAFETY: the non-null pointers passed here are NUL-terminated strings owned by EGL or GL.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A dmabuf's single-plane layout, as an exporter reports it.
#[derive(Debug)]
pub struct Dmabuf<'a> {
    /// The buffer.
    pub fd: BorrowedFd<'a>,
    /// Size in pixels.
    pub width: u32,
    #[allow(missing_docs)]
    pub height: u32,
    /// DRM fourcc.
    pub fourcc: u32,
    /// Bytes per row.
    pub stride: u32,
    /// Byte offset of the first pixel.
    pub offset: u32,
    /// Format modifier ([`MOD_INVALID`]: none given).
    pub modifier: u64,
}

/// What `eglExportDMABUFImageMESA` returned.
#[derive(Debug)]
pub struct Exported {
    /// The new dmabuf.
    pub fd: OwnedFd,
    /// DRM fourcc.
    pub fourcc: u32,
    /// Modifier from the export query.
    pub modifier: u64,
    /// Bytes per row.
    pub stride: u32,
    /// Offset of the first pixel.
    pub offset: u32,
}

impl Egl {
    /// Loads libEGL.so.1 and the entry points.
    #[allow(clippy::multiple_unsafe_ops_per_block)] // one lookup per entry point, same contract
    pub fn load() -> Result<Self, String> {
        let l = Loader::new()?;
        // SAFETY: for every `get`/`need` below, the field's type is the C prototype of the named
        // entry point in EGL 1.5, OpenGL 4.6 and the extensions EGL_EXT_platform_base,
        // EGL_KHR_image_base, EGL_MESA_image_dma_buf_export, EGL_EXT_device_enumeration,
        // EGL_EXT_device_query and GL_OES_EGL_image.
        unsafe {
            Ok(Self {
                get_error: l.need(c"eglGetError")?,
                query_string: l.need(c"eglQueryString")?,
                get_platform_display: l.need(c"eglGetPlatformDisplayEXT")?,
                initialize: l.need(c"eglInitialize")?,
                bind_api: l.need(c"eglBindAPI")?,
                create_context: l.need(c"eglCreateContext")?,
                make_current: l.need(c"eglMakeCurrent")?,
                current_display: l.need(c"eglGetCurrentDisplay")?,
                current_context: l.need(c"eglGetCurrentContext")?,
                create_image: l.need(c"eglCreateImageKHR")?,
                destroy_image: l.need(c"eglDestroyImageKHR")?,
                export_query: l.get(c"eglExportDMABUFImageQueryMESA"),
                export: l.get(c"eglExportDMABUFImageMESA"),
                query_devices: l.get(c"eglQueryDevicesEXT"),
                query_device_string: l.get(c"eglQueryDeviceStringEXT"),
                gl_get_string: l.need(c"glGetString")?,
                gl_get_error: l.need(c"glGetError")?,
                gl_gen_textures: l.need(c"glGenTextures")?,
                gl_delete_textures: l.need(c"glDeleteTextures")?,
                gl_bind_texture: l.need(c"glBindTexture")?,
                gl_tex_storage_2d: l.need(c"glTexStorage2D")?,
                gl_tex_image_2d: l.need(c"glTexImage2D")?,
                gl_tex_parameteri: l.need(c"glTexParameteri")?,
                gl_gen_framebuffers: l.need(c"glGenFramebuffers")?,
                gl_delete_framebuffers: l.need(c"glDeleteFramebuffers")?,
                gl_bind_framebuffer: l.need(c"glBindFramebuffer")?,
                gl_framebuffer_texture_2d: l.need(c"glFramebufferTexture2D")?,
                gl_check_framebuffer_status: l.need(c"glCheckFramebufferStatus")?,
                gl_clear_color: l.need(c"glClearColor")?,
                gl_clear: l.need(c"glClear")?,
                gl_finish: l.need(c"glFinish")?,
                gl_read_pixels: l.need(c"glReadPixels")?,
                gl_pixel_storei: l.need(c"glPixelStorei")?,
                gl_is_texture: l.need(c"glIsTexture")?,
                gl_get_integerv: l.need(c"glGetIntegerv")?,
                gl_image_target_texture_2d: l.get(c"glEGLImageTargetTexture2DOES"),
            })
        }
    }

    /// The current EGL error, by name.
    pub fn error(&self) -> String {
        // SAFETY: eglGetError has no preconditions.
        egl_error_name(unsafe { (self.get_error)() })
    }

    /// `eglQueryString` (`None`: EGL_NO_DISPLAY, the client extensions).
    pub fn string(&self, dpy: Option<Display>, what: i32) -> String {
        let dpy = dpy.map_or(std::ptr::null_mut(), |d| d.0);
        // SAFETY: a display EGL handed out, or EGL_NO_DISPLAY (client strings); the result is
        // null or a static NUL-terminated string.
        cstr(unsafe { (self.query_string)(dpy, what) })
    }

    /// `glGetString`; needs a current context.
    pub fn gl_string(&self, what: c_uint) -> String {
        if self.current_context().is_null() {
            return "(no current context)".into();
        }
        // SAFETY: a context is current (checked); the result is null or a static string.
        cstr(unsafe { (self.gl_get_string)(what) }.cast())
    }

    /// `glGetError`; needs a current context.
    pub fn gl_error(&self) -> c_uint {
        // SAFETY: callers have a current context.
        unsafe { (self.gl_get_error)() }
    }

    /// `eglGetCurrentDisplay` and `eglGetCurrentContext`: what is current on this thread
    /// (made current by this module or by a library such as libvirglrenderer).
    pub fn current(&self) -> Option<(Display, Context)> {
        // SAFETY: no preconditions.
        let dpy = unsafe { (self.current_display)() };
        let ctx = self.current_context();
        (!dpy.is_null() && !ctx.is_null()).then_some((Display(dpy), Context(ctx)))
    }

    fn current_context(&self) -> EglContext {
        // SAFETY: no preconditions.
        unsafe { (self.current_context)() }
    }

    /// `glIsTexture` in the current context (false without one).
    pub fn is_texture(&self, tex: u32) -> bool {
        if self.current_context().is_null() {
            return false;
        }
        // SAFETY: a context is current (checked); any name is accepted.
        unsafe { (self.gl_is_texture)(tex) != 0 }
    }

    fn get_integer(&self, what: c_uint) -> c_int {
        let mut v = 0;
        // SAFETY: `what` names single-integer state; `v` is a valid out location; callers have a
        // current context.
        unsafe { (self.gl_get_integerv)(what, &mut v) };
        v
    }

    /// The EGL devices (`eglQueryDevicesEXT`), each with its extensions and DRM device file.
    pub fn devices(&self) -> Vec<(Device, String, String)> {
        let Some(qd) = self.query_devices else {
            return Vec::new();
        };
        let mut devs = [std::ptr::null_mut::<c_void>(); 8];
        let mut n = 0;
        // SAFETY: `devs` holds 8 entries, the count passed; `n` is a valid out location.
        if unsafe { qd(8, devs.as_mut_ptr(), &mut n) } == 0 {
            return Vec::new();
        }
        let n = usize::try_from(n).unwrap_or(0).min(devs.len());
        devs[..n]
            .iter()
            .map(|&d| {
                let s = |what| match self.query_device_string {
                    // SAFETY: `d` is a device handle from eglQueryDevicesEXT.
                    Some(qs) => cstr(unsafe { qs(d, what) }),
                    None => "(no eglQueryDeviceStringEXT)".into(),
                };
                (Device(d), s(EGL_EXTENSIONS), s(EGL_DRM_DEVICE_FILE_EXT))
            })
            .collect()
    }

    /// Opens an EGL display, creates a GL 4.2 context without a config
    /// (EGL_KHR_no_config_context) and makes it current on this thread without a surface
    /// (EGL_KHR_surfaceless_context). Prints what it found.
    pub fn open(&self, platform: Platform) -> Result<Session, String> {
        let (platform, native) = match platform {
            Platform::Surfaceless => (EGL_PLATFORM_SURFACELESS_MESA, std::ptr::null_mut()),
            Platform::Device(d) => (EGL_PLATFORM_DEVICE_EXT, d.0),
        };
        // SAFETY: a platform enum with its native display (EGL_DEFAULT_DISPLAY, or a device
        // handle from eglQueryDevicesEXT); no attributes.
        let dpy = unsafe { (self.get_platform_display)(platform, native, std::ptr::null()) };
        if dpy.is_null() {
            return Err(format!("eglGetPlatformDisplayEXT: {}", self.error()));
        }
        let (mut major, mut minor) = (0, 0);
        // SAFETY: a display from eglGetPlatformDisplayEXT; out pointers to locals.
        if unsafe { (self.initialize)(dpy, &mut major, &mut minor) } == 0 {
            return Err(format!("eglInitialize: {}", self.error()));
        }
        let d = Some(Display(dpy));
        let exts = self.string(d, EGL_EXTENSIONS);
        println!(
            "  EGL {major}.{minor}, vendor {}, version {}",
            self.string(d, EGL_VENDOR),
            self.string(d, EGL_VERSION)
        );
        for e in [
            "EGL_MESA_image_dma_buf_export",
            "EGL_EXT_image_dma_buf_import",
            "EGL_EXT_image_dma_buf_import_modifiers",
            "EGL_KHR_gl_texture_2D_image",
            "EGL_KHR_no_config_context",
            "EGL_KHR_surfaceless_context",
        ] {
            println!("  {e}: {}", has_ext(&exts, e));
        }
        // SAFETY: EGL_OPENGL_API is a valid API enum.
        unsafe { (self.bind_api)(EGL_OPENGL_API) };
        let attrs = [
            EGL_CONTEXT_MAJOR_VERSION,
            4,
            EGL_CONTEXT_MINOR_VERSION,
            2,
            EGL_NONE,
        ];
        // SAFETY: EGL_NO_CONFIG_KHR (null) with EGL_KHR_no_config_context; no share context;
        // EGL_NONE-terminated attributes.
        let ctx = unsafe {
            (self.create_context)(
                dpy,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                attrs.as_ptr(),
            )
        };
        if ctx.is_null() {
            return Err(format!("eglCreateContext: {}", self.error()));
        }
        // SAFETY: a surfaceless make-current of a context of this display.
        let ok =
            unsafe { (self.make_current)(dpy, std::ptr::null_mut(), std::ptr::null_mut(), ctx) };
        if ok == 0 {
            return Err(format!("eglMakeCurrent: {}", self.error()));
        }
        println!(
            "  GL vendor {}, renderer {}, version {}",
            self.gl_string(GL_VENDOR),
            self.gl_string(GL_RENDERER),
            self.gl_string(GL_VERSION)
        );
        Ok(Session {
            dpy: Display(dpy),
            ctx: Context(ctx),
        })
    }

    /// Creates a `width`x`height` RGBA8 texture (immutable `glTexStorage2D` storage, or mutable
    /// `glTexImage2D` storage) in the current context and clears it to `rgba`.
    pub fn cleared_texture(
        &self,
        width: i32,
        height: i32,
        immutable: bool,
        rgba: [u8; 4],
    ) -> Result<u32, String> {
        let (mut tex, mut fb) = (0, 0);
        let c = rgba.map(|b| f32::from(b) / 255.0);
        #[allow(clippy::multiple_unsafe_ops_per_block)] // one GL sequence on one context
        // SAFETY: for each GL call, the caller's context is current; out pointers are to locals;
        // glTexImage2D gets a null data pointer (allocation without upload).
        let status = unsafe {
            (self.gl_gen_textures)(1, &mut tex);
            (self.gl_bind_texture)(GL_TEXTURE_2D, tex);
            (self.gl_tex_parameteri)(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_NEAREST);
            if immutable {
                (self.gl_tex_storage_2d)(GL_TEXTURE_2D, 1, GL_RGBA8, width, height);
            } else {
                (self.gl_tex_image_2d)(
                    GL_TEXTURE_2D,
                    0,
                    GL_RGBA8 as c_int,
                    width,
                    height,
                    0,
                    GL_RGBA,
                    GL_UNSIGNED_BYTE,
                    std::ptr::null(),
                );
            }
            (self.gl_gen_framebuffers)(1, &mut fb);
            (self.gl_bind_framebuffer)(GL_FRAMEBUFFER, fb);
            (self.gl_framebuffer_texture_2d)(
                GL_FRAMEBUFFER,
                GL_COLOR_ATTACHMENT0,
                GL_TEXTURE_2D,
                tex,
                0,
            );
            let status = (self.gl_check_framebuffer_status)(GL_FRAMEBUFFER);
            (self.gl_clear_color)(c[0], c[1], c[2], c[3]);
            (self.gl_clear)(GL_COLOR_BUFFER_BIT);
            (self.gl_finish)();
            (self.gl_bind_framebuffer)(GL_FRAMEBUFFER, 0);
            (self.gl_delete_framebuffers)(1, &fb);
            status
        };
        let err = self.gl_error();
        println!("  texture {tex} cleared: framebuffer status {status:#x}, GL error {err:#x}");
        if status != GL_FRAMEBUFFER_COMPLETE || err != 0 {
            return Err(format!(
                "clearing texture {tex}: status {status:#x}, GL error {err:#x}"
            ));
        }
        Ok(tex)
    }

    /// Deletes a texture of the current context.
    pub fn delete_texture(&self, tex: u32) {
        // SAFETY: the caller's context is current; a pointer to one name.
        unsafe { (self.gl_delete_textures)(1, &tex) };
    }

    /// `eglCreateImageKHR(EGL_GL_TEXTURE_2D_KHR)` on texture `tex` of context `ctx`, then
    /// `eglExportDMABUFImageQueryMESA` and `eglExportDMABUFImageMESA`, each printed with its EGL
    /// error. An export that "succeeds" without an fd (Mesa's software drivers) is an error.
    pub fn export_texture(&self, dpy: Display, ctx: Context, tex: u32) -> Result<Exported, String> {
        let (Display(dpy), Context(ctx)) = (dpy, ctx);
        // SAFETY: the client buffer of EGL_GL_TEXTURE_2D_KHR is a texture name cast to a pointer
        // (EGL_KHR_gl_texture_2D_image); no attributes. EGL checks display, context and name.
        let image = unsafe {
            (self.create_image)(
                dpy,
                ctx,
                EGL_GL_TEXTURE_2D_KHR,
                tex as usize as *mut c_void,
                std::ptr::null(),
            )
        };
        let err = self.error();
        println!(
            "  eglCreateImageKHR(ctx {ctx:?}, EGL_GL_TEXTURE_2D_KHR, tex {tex}) = {image:?}: {err}"
        );
        if image.is_null() {
            return Err(format!("eglCreateImageKHR(EGL_GL_TEXTURE_2D_KHR): {err}"));
        }
        let result = self.export_image(dpy, image);
        // SAFETY: `image` was created above on `dpy` and is not used afterwards.
        unsafe { (self.destroy_image)(dpy, image) };
        result
    }

    fn export_image(&self, dpy: EglDisplay, image: EglImage) -> Result<Exported, String> {
        let (Some(query), Some(export)) = (self.export_query, self.export) else {
            return Err("the EGL_MESA_image_dma_buf_export entry points are missing".into());
        };
        let (mut fourcc, mut planes, mut modifier) = (0, 0, MOD_INVALID);
        // SAFETY: a live image; out pointers to locals (one modifier: RGBA images have one plane,
        // checked below before the export writes per-plane arrays).
        let ok = unsafe { query(dpy, image, &mut fourcc, &mut planes, &mut modifier) };
        let err = self.error();
        println!(
            "  eglExportDMABUFImageQueryMESA = {ok}: {err}; fourcc {}, planes {planes}, modifier {modifier:#x}",
            fourcc_name(fourcc as u32)
        );
        if ok == 0 {
            return Err(format!("eglExportDMABUFImageQueryMESA: {err}"));
        }
        if planes != 1 {
            return Err(format!("{planes} planes"));
        }
        let (mut fd, mut stride, mut offset) = (-1, 0, 0);
        // SAFETY: a live image of one plane; out pointers to one-element locals.
        let ok = unsafe { export(dpy, image, &mut fd, &mut stride, &mut offset) };
        let err = self.error();
        println!(
            "  eglExportDMABUFImageMESA = {ok}: {err}; fd {fd}, stride {stride}, offset {offset}"
        );
        if ok == 0 {
            return Err(format!("eglExportDMABUFImageMESA: {err}"));
        }
        if fd < 0 {
            return Err(format!(
                "eglExportDMABUFImageMESA returned EGL_TRUE but fd {fd}"
            ));
        }
        // SAFETY: on success eglExportDMABUFImageMESA hands over a new fd, owned from here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Exported {
            fd,
            fourcc: fourcc as u32,
            modifier,
            stride: u32::try_from(stride).unwrap_or(0),
            offset: u32::try_from(offset).unwrap_or(0),
        })
    }

    /// Imports `d` as an EGL image on display `dpy` (EGL_EXT_image_dma_buf_import, with the
    /// modifier where one is given), binds it to a new texture of the current context and reads
    /// it back through a framebuffer: `width*height` pixels as R, G, B, A bytes, row 0 first (the
    /// dmabuf's first row). Restores the texture and framebuffer bindings it changed.
    pub fn import_and_read(&self, dpy: Display, d: &Dmabuf<'_>) -> Result<Vec<u8>, String> {
        let Display(dpy) = dpy;
        let target = self
            .gl_image_target_texture_2d
            .ok_or("no glEGLImageTargetTexture2DOES")?;
        let int = |v: u32| i32::from_ne_bytes(v.to_ne_bytes());
        let mut attrs = vec![
            EGL_WIDTH,
            int(d.width),
            EGL_HEIGHT,
            int(d.height),
            EGL_LINUX_DRM_FOURCC_EXT,
            int(d.fourcc),
            EGL_DMA_BUF_PLANE0_FD_EXT,
            d.fd.as_raw_fd(),
            EGL_DMA_BUF_PLANE0_OFFSET_EXT,
            int(d.offset),
            EGL_DMA_BUF_PLANE0_PITCH_EXT,
            int(d.stride),
        ];
        if d.modifier != MOD_INVALID {
            attrs.extend([
                EGL_DMA_BUF_PLANE0_MODIFIER_LO_EXT,
                int((d.modifier & 0xffff_ffff) as u32),
                EGL_DMA_BUF_PLANE0_MODIFIER_HI_EXT,
                int((d.modifier >> 32) as u32),
            ]);
        }
        attrs.push(EGL_NONE);
        // SAFETY: a valid display; EGL_LINUX_DMA_BUF_EXT takes no context and no client buffer;
        // `attrs` is EGL_NONE-terminated and outlives the call (EGL dups the fd it needs).
        let image = unsafe {
            (self.create_image)(
                dpy,
                std::ptr::null_mut(),
                EGL_LINUX_DMA_BUF_EXT,
                std::ptr::null_mut(),
                attrs.as_ptr(),
            )
        };
        let err = self.error();
        println!("  import: eglCreateImageKHR(EGL_LINUX_DMA_BUF_EXT) = {image:?}: {err}");
        if image.is_null() {
            return Err(format!("eglCreateImageKHR(EGL_LINUX_DMA_BUF_EXT): {err}"));
        }
        let (w, h) = (
            c_int::try_from(d.width).map_err(|_| "width")?,
            c_int::try_from(d.height).map_err(|_| "height")?,
        );
        let saved_tex = self.get_integer(GL_TEXTURE_BINDING_2D);
        let saved_fb = self.get_integer(GL_FRAMEBUFFER_BINDING);
        let mut pixels = vec![0u8; d.width as usize * d.height as usize * 4];
        let (mut tex, mut fb) = (0, 0);
        #[allow(clippy::multiple_unsafe_ops_per_block)] // one GL sequence on one context
        // SAFETY: for each GL call, the caller's context is current; out pointers are to locals
        // or to `pixels`, which holds width*height RGBA bytes at pack alignment 1; `image` is
        // live until destroyed at the end.
        let status = unsafe {
            (self.gl_gen_textures)(1, &mut tex);
            (self.gl_bind_texture)(GL_TEXTURE_2D, tex);
            (self.gl_tex_parameteri)(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_NEAREST);
            target(GL_TEXTURE_2D, image);
            (self.gl_gen_framebuffers)(1, &mut fb);
            (self.gl_bind_framebuffer)(GL_FRAMEBUFFER, fb);
            (self.gl_framebuffer_texture_2d)(
                GL_FRAMEBUFFER,
                GL_COLOR_ATTACHMENT0,
                GL_TEXTURE_2D,
                tex,
                0,
            );
            let status = (self.gl_check_framebuffer_status)(GL_FRAMEBUFFER);
            (self.gl_pixel_storei)(GL_PACK_ALIGNMENT, 1);
            (self.gl_read_pixels)(
                0,
                0,
                w,
                h,
                GL_RGBA,
                GL_UNSIGNED_BYTE,
                pixels.as_mut_ptr().cast(),
            );
            (self.gl_finish)();
            (self.gl_bind_framebuffer)(GL_FRAMEBUFFER, saved_fb as c_uint);
            (self.gl_bind_texture)(GL_TEXTURE_2D, saved_tex as c_uint);
            (self.gl_delete_framebuffers)(1, &fb);
            (self.gl_delete_textures)(1, &tex);
            (self.destroy_image)(dpy, image);
            status
        };
        let err = self.gl_error();
        println!("  import: framebuffer status {status:#x}, GL error {err:#x}");
        if status != GL_FRAMEBUFFER_COMPLETE || err != 0 {
            return Err(format!(
                "reading the imported image: framebuffer status {status:#x}, GL error {err:#x}"
            ));
        }
        Ok(pixels)
    }
}

/// An EGL display with a context current on the thread that opened it.
#[derive(Debug)]
pub struct Session {
    /// The display.
    pub dpy: Display,
    /// The context.
    pub ctx: Context,
}

/// Maps a dmabuf read-only and copies `len` bytes from its start (CPU access: only meaningful
/// for linear layouts, and only where the exporter allows CPU maps).
pub fn mmap_read(fd: BorrowedFd<'_>, len: usize) -> Result<Vec<u8>, String> {
    // The buffer's size (dmabufs and memfds report it to SEEK_END): a mapping past the end of
    // the object would fault on access.
    // SAFETY: lseek on a valid fd; it moves only that file's offset, which nothing here uses.
    let size = unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_END) };
    if size < 0 {
        return Err(format!("lseek: {}", std::io::Error::last_os_error()));
    }
    if (size as u64) < len as u64 || len == 0 {
        return Err(format!("the buffer has {size} bytes, {len} wanted"));
    }
    // SAFETY: a fresh read-only shared mapping of a valid fd; checked for MAP_FAILED below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the mapping is `len` readable bytes and lives until the munmap below.
    let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }.to_vec();
    // SAFETY: unmaps exactly the mapping made above; `bytes` is a copy.
    unsafe { libc::munmap(p, len) };
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// The import path, checked without a GPU: Mesa (llvmpipe) imports a memfd holding linear
    /// XRGB8888 pixels as a dmabuf; every pixel read back through GL must be the one written,
    /// row 0 first, and a CPU map must give the bytes back.
    #[test]
    fn a_linear_buffer_reads_back_through_an_egl_import() {
        let egl = Egl::load().expect("libEGL.so.1");
        let s = egl
            .open(Platform::Surfaceless)
            .expect("surfaceless EGL display");
        let (w, h) = (64u32, 48u32);
        let stride = w * 4 + 64; // padded rows: the pitch must be honoured
        let offset = 128u32;
        // SAFETY: a NUL-terminated name, no flags.
        let raw = unsafe { libc::memfd_create(c"pixels".as_ptr(), 0) };
        assert!(
            raw >= 0,
            "memfd_create: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: memfd_create returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut bytes = vec![0xeeu8; (offset + stride * h) as usize];
        let px = |x: u32, y: u32| [x as u8, y as u8, (x ^ y) as u8 | 0x80, 0xff]; // B, G, R, X
        for y in 0..h {
            for x in 0..w {
                let at = (offset + y * stride + x * 4) as usize;
                bytes[at..at + 4].copy_from_slice(&px(x, y));
            }
        }
        std::fs::File::from(fd.try_clone().unwrap())
            .write_all_at(&bytes, 0)
            .unwrap();
        let d = Dmabuf {
            fd: fd.as_fd(),
            width: w,
            height: h,
            fourcc: u32::from_le_bytes(*b"XR24"),
            stride,
            offset,
            modifier: MOD_LINEAR,
        };
        let rgba = egl
            .import_and_read(s.dpy, &d)
            .expect("import and read back");
        assert_eq!(rgba.len(), (w * h * 4) as usize);
        for y in 0..h {
            for x in 0..w {
                let at = ((y * w + x) * 4) as usize;
                let [b, g, r, _] = px(x, y);
                assert_eq!(rgba[at..at + 3], [r, g, b], "pixel ({x},{y})");
            }
        }
        assert_eq!(mmap_read(fd.as_fd(), bytes.len()).unwrap(), bytes);
        // A map past the end is refused instead of faulting.
        assert!(mmap_read(fd.as_fd(), bytes.len() + 1).is_err());
    }
}
