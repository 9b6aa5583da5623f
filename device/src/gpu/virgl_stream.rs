//! What a virgl context's SUBMIT_3D stream asks the host to allocate.
//!
//! A virgl command stream is a sequence of commands, each a header word (`length << 16 |
//! object << 8 | command`) and `length` words of arguments. One command allocates host storage
//! of a guest-chosen size: `VIRGL_CCMD_PIPE_RESOURCE_CREATE`, which makes a context-local
//! resource that a later HOST3D `RESOURCE_CREATE_BLOB` with the same `blob_id` turns into a blob.
//! libvirglrenderer allocates it when the stream runs (a 3.9 GB GL buffer from one 48-byte
//! command was found by the fuzzer), so the device finds these commands before the stream goes
//! to the library and charges each to the host memory budget like a RESOURCE_CREATE_3D.
//!
//! The walk stops where the library's decoder stops: at a command whose length runs past the
//! stream's end. Only virgl contexts' streams are read (Venus and gfxstream streams have other
//! formats).

use crate::renderer::ResourceCreate3d;

/// `VIRGL_CCMD_PIPE_RESOURCE_CREATE` (virgl_protocol.h, 0.10 and later).
const VIRGL_CCMD_PIPE_RESOURCE_CREATE: u32 = 48;
/// Its argument words: target, format, bind, width, height, depth, array size, last level,
/// samples, flags, blob id (`VIRGL_PIPE_RES_CREATE_SIZE`).
const PIPE_RES_CREATE_SIZE: usize = 11;

/// One `VIRGL_CCMD_PIPE_RESOURCE_CREATE` of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PipeResourceCreate {
    /// The blob id a later RESOURCE_CREATE_BLOB names.
    pub(super) blob_id: u32,
    /// The resource, in RESOURCE_CREATE_3D's terms.
    pub(super) args: ResourceCreate3d,
}

/// The `VIRGL_CCMD_PIPE_RESOURCE_CREATE` commands of `stream` (little-endian words; a trailing
/// partial word is ignored, as the library does), in stream order. A command of another length
/// than the protocol's is skipped: the library refuses it without allocating.
pub(super) fn pipe_resource_creates(stream: &[u8]) -> Vec<PipeResourceCreate> {
    let word = |i: usize| -> Option<u32> {
        let b = stream.get(i.checked_mul(4)?..i.checked_mul(4)?.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let words = stream.len() / 4;
    let mut found = Vec::new();
    let mut at = 0usize;
    while let Some(header) = word(at) {
        let len = (header >> 16) as usize;
        if at + 1 + len > words {
            break;
        }
        if header & 0xff == VIRGL_CCMD_PIPE_RESOURCE_CREATE && len == PIPE_RES_CREATE_SIZE {
            let mut args = [0u32; PIPE_RES_CREATE_SIZE];
            for (i, a) in args.iter_mut().enumerate() {
                *a = word(at + 1 + i).unwrap_or(0);
            }
            found.push(PipeResourceCreate {
                blob_id: args[10],
                args: ResourceCreate3d {
                    target: args[0],
                    format: args[1],
                    bind: args[2],
                    width: args[3],
                    height: args[4],
                    depth: args[5],
                    array_size: args[6],
                    last_level: args[7],
                    nr_samples: args[8],
                    flags: args[9],
                },
            });
        }
        at += 1 + len;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    const CREATE: u32 = (11 << 16) | VIRGL_CCMD_PIPE_RESOURCE_CREATE;

    #[test]
    fn finds_each_pipe_resource_create_with_its_arguments() {
        // A clear (command 7, 8 words), then a buffer of 0xea010f01 bytes (the fuzzer's),
        // then a 64x64 2D texture.
        let mut words = vec![(8 << 16) | 7, 0, 0, 0, 0, 0, 0, 0, 0];
        words.extend([CREATE, 0, 0x3d, 0x10, 0xea01_0f01, 1, 1, 0, 0, 0, 6, 1]);
        words.extend([CREATE, 2, 1, 2, 64, 64, 1, 1, 0, 0, 0, 9]);
        let found = pipe_resource_creates(&bytes(&words));
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].blob_id, 1);
        assert_eq!(found[0].args.width, 0xea01_0f01);
        assert_eq!(found[0].args.flags, 6);
        assert_eq!(found[1].blob_id, 9);
        assert_eq!(
            found[1].args,
            ResourceCreate3d {
                target: 2,
                format: 1,
                bind: 2,
                width: 64,
                height: 64,
                depth: 1,
                array_size: 1,
                last_level: 0,
                nr_samples: 0,
                flags: 0,
            }
        );
    }

    #[test]
    fn stops_where_a_command_runs_past_the_end_and_skips_other_lengths() {
        // Cut one word short: the library does not run it.
        let words = [CREATE, 0, 0, 0, 1 << 30, 1, 1, 0, 0, 0, 0];
        assert!(pipe_resource_creates(&bytes(&words)).is_empty());
        // A length that is not the protocol's is refused by the library; the next is found.
        let words = [
            (3 << 16) | VIRGL_CCMD_PIPE_RESOURCE_CREATE,
            0,
            0,
            0,
            CREATE,
            0,
            0,
            0,
            4096,
            1,
            1,
            0,
            0,
            0,
            0,
            5,
        ];
        let found = pipe_resource_creates(&bytes(&words));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].blob_id, 5);
        // Empty, a partial word, a header whose length runs far past the end.
        assert!(pipe_resource_creates(&[]).is_empty());
        assert!(pipe_resource_creates(&[1, 2, 3]).is_empty());
        assert!(pipe_resource_creates(&bytes(&[0xffff_0000 | CREATE])).is_empty());
    }
}
