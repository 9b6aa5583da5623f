//! Bring-up: negotiate, read the config, GET_DISPLAY_INFO through the display peer.

mod common;

use common::*;
use vhost_user_gpu_tests::protocol::{resp, Command};

#[test]
fn display_info_round_trip() {
    let (p, mut fe) = start();
    eprintln!(
        "features {:#x} protocol {:?} config {:?}",
        fe.features(),
        fe.protocol_features(),
        fe.config()
    );
    let r = fe
        .request(&Command::get_display_info())
        .check(&p, "GET_DISPLAY_INFO");
    assert_resp(&r, resp::OK_DISPLAY_INFO, "GET_DISPLAY_INFO", &p);
    let modes = r.display_info().unwrap();
    assert_eq!(
        (modes[0].rect.width, modes[0].rect.height, modes[0].enabled),
        (1024, 768, 1)
    );
    eprintln!("{}", p.stderr_tail());
}
