//! Contexts: create/destroy, id collisions, bounds.

mod common;

use virglrenderer::{Error, CAPSET_VIRGL2, MAX_CONTEXT_NAME_LEN};

#[test]
fn create_destroy_and_reuse() {
    let _lock = common::lock();
    let r = common::renderer();
    let a = r.create_context(1, b"a", None).unwrap();
    let b = r.create_context(2, b"b", Some(CAPSET_VIRGL2)).unwrap();
    assert_eq!((a.id(), b.id()), (1, 2));
    drop(a);
    // The id is free again after drop (the library destroyed the context).
    let a2 = r.create_context(1, b"a again", None).unwrap();
    assert_eq!(a2.id(), 1);
}

#[test]
fn id_collision_is_a_typed_error() {
    let _lock = common::lock();
    let r = common::renderer();
    let _a = r.create_context(5, b"a", None).unwrap();
    assert!(matches!(
        r.create_context(5, b"dup", None),
        Err(Error::ContextIdInUse(5))
    ));
    assert!(matches!(
        r.create_context(5, b"dup", Some(CAPSET_VIRGL2)),
        Err(Error::ContextIdInUse(5))
    ));
}

#[test]
fn bad_arguments() {
    let _lock = common::lock();
    let r = common::renderer();
    assert!(matches!(
        r.create_context(0, b"zero", None),
        Err(Error::ZeroId(_))
    ));
    let long = vec![b'x'; MAX_CONTEXT_NAME_LEN + 1];
    assert!(matches!(
        r.create_context(1, &long, None),
        Err(Error::TooLarge { .. })
    ));
    // Capset ids are 8 bits in the context-init flags.
    assert!(matches!(
        r.create_context(1, b"x", Some(0x100)),
        Err(Error::InvalidArgument(_))
    ));
    // An unknown capset is refused by the library with its errno.
    match r.create_context(1, b"x", Some(77)) {
        Err(Error::Library { errno, .. }) => assert_eq!(errno.0, libc::EINVAL),
        other => panic!("{other:?}"),
    }
    // The failed attempts did not reserve the id.
    r.create_context(1, b"x", None).unwrap();
}
