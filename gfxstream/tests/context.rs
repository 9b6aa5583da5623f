//! Contexts: creation with a capset, refused ids, command submission checks.

#[macro_use]
mod common;

#[cfg(gfxstream_found)]
use gfxstream::{opcode, Capset, Error};

library_test! {
    /// Contexts are created with their capset; id 0, duplicates and long names are refused;
    /// commands are length-checked before the library sees them.
    fn contexts_and_submissions() {
        let gfx = common::init();
        let ctx = gfx.create_context(1, "test", Some(Capset::Gles)).expect("context");
        assert_eq!(ctx.id(), 1);
        assert!(matches!(gfx.create_context(1, "again", None), Err(Error::ContextExists(1))));
        assert!(matches!(gfx.create_context(0, "zero", None), Err(Error::ZeroId(_))));
        let long = "x".repeat(65);
        assert!(matches!(gfx.create_context(2, &long, None), Err(Error::NameTooLong(65))));
        let vk = gfx.create_context(2, "vk", Some(Capset::Vulkan)).expect("second context");

        // A placeholder command is accepted by the library.
        let mut cmd = opcode::PLACEHOLDER_COMMAND_VK.to_le_bytes().to_vec();
        cmd.resize(12, 0);
        ctx.submit(&cmd).expect("placeholder submit");
        // Too short for its struct: refused before the library would over-read.
        assert!(matches!(ctx.submit(&cmd[..8]), Err(Error::BadCommandLength { min: 12, .. })));
        assert!(matches!(ctx.submit(&[0; 2]), Err(Error::BadCommandLength { .. })));
        assert!(matches!(ctx.submit(&0x1234u32.to_le_bytes()), Err(Error::UnknownCommand(0x1234))));
        // A well-formed command the library rejects (no such resource) comes back as its error.
        let mut create = opcode::CONTEXT_CREATE.to_le_bytes().to_vec();
        create.extend_from_slice(&77u32.to_le_bytes());
        assert!(matches!(ctx.submit(&create), Err(Error::Library { errno: 22, .. })));

        // Dropping a context frees its id.
        drop(vk);
        gfx.create_context(2, "vk again", Some(Capset::Vulkan)).expect("id reusable after drop");
    }
}
