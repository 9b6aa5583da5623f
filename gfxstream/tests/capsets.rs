//! Capsets: the three gfxstream answers, with the sizes and contents the library documents.

#[macro_use]
mod common;

#[cfg(gfxstream_found)]
use gfxstream::Capset;

#[cfg(gfxstream_found)]
fn u32_at(data: &[u8], index: usize) -> u32 {
    let b = &data[index * 4..index * 4 + 4];
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

library_test! {
    /// Vulkan (3) is 104 bytes, GLES (8) and composer (9) 16; all start with protocol version 1,
    /// ring size 12288 and buffer size 1 MiB.
    fn capsets_have_the_documented_sizes_and_contents() {
        let gfx = common::init();
        for (capset, size) in [(Capset::Vulkan, 104), (Capset::Gles, 16), (Capset::Composer, 16)] {
            let info = gfx.capset_info(capset).expect("capset answered");
            assert_eq!(info.max_size, size, "{capset:?}");
            let data = gfx.capset(capset, 0).expect("capset contents");
            assert_eq!(data.len(), size as usize);
            assert_eq!(u32_at(&data, 0), 1, "{capset:?} protocolVersion");
            assert_eq!(u32_at(&data, 1), 12288, "{capset:?} ringSize");
            assert_eq!(u32_at(&data, 2), 1 << 20, "{capset:?} bufferSize");
        }
        // GLES: blobAlignment is the host page size.
        let gles = gfx.capset(Capset::Gles, 0).unwrap();
        assert_eq!(u32_at(&gles, 3) as usize, 4096);
        assert_eq!(Capset::from_id(1), None);
    }
}

library_test! {
    /// Without `USE_VK` the Vulkan capset is neither answered nor accepted for a context: the
    /// library would list it, and a guest Vulkan driver would then wait forever for replies.
    fn vulkan_capset_only_with_vulkan_enabled() {
        common::prepare_env();
        let options = gfxstream::InitOptions {
            flags: gfxstream::RendererFlags::USE_EGL | gfxstream::RendererFlags::USE_GLES,
            ..gfxstream::InitOptions::default()
        };
        let gfx = gfxstream::Gfxstream::init(&options).expect("init without Vulkan");
        assert!(!gfx.serves(Capset::Vulkan));
        assert!(gfx.capset_info(Capset::Vulkan).is_none());
        assert!(gfx.capset(Capset::Vulkan, 0).is_err());
        assert!(matches!(
            gfx.create_context(1, "vk", Some(Capset::Vulkan)),
            Err(gfxstream::Error::UnsupportedCapset(3))
        ));
        assert!(gfx.capset_info(Capset::Gles).is_some());
        gfx.create_context(2, "gles", Some(Capset::Gles))
            .expect("GLES context");
    }
}
