//! A libvirtd of the tests' own (the one the driver's tests start, `tests/common`: QEMU under
//! TCG, no guest OS, in a private mount namespace) for tests written in other languages (the
//! Python package's). It defines the domains named on the command line (`NAME` is started,
//! `NAME:off` only defined), prints one JSON line:
//! `{"uri": "libvirt+...", "libvirt_uri": "...", "images": "DIR"}`, and stops libvirtd and every
//! QEMU it started when its standard input closes or it gets SIGTERM, SIGINT or SIGHUP.
//!
//! When a part is missing (libvirtd, its QEMU driver, virsh, QEMU), it prints
//! `{"missing": "WHAT"}` and exits with status 3: outside CI the caller skips, saying so; under
//! CI the caller fails.
//!
//! `cargo run -p vdev-driver-libvirt --example libvirtd -- vm1 vm2:off`

#[path = "../tests/common/mod.rs"]
mod common;

fn main() {
    if let Some(why) = common::missing() {
        println!("{}", serde_json::json!({ "missing": why }));
        std::process::exit(3);
    }
    let lv = common::Libvirtd::start().expect("everything it needs is installed");
    for arg in std::env::args().skip(1) {
        let (name, start) = match arg.strip_suffix(":off") {
            Some(name) => (name.to_owned(), false),
            None => (arg, true),
        };
        lv.define(&name, 4, start);
    }
    let images = lv.dir.path().join("img");
    println!(
        "{}",
        serde_json::json!({
            "uri": lv.vdev_uri(),
            "libvirt_uri": lv.uri,
            "images": images,
        })
    );
    // Until the caller is done (its end of the pipe closed, whatever the reason) or a signal
    // asks to stop: then libvirtd and its QEMUs are stopped.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use tokio::io::AsyncReadExt;
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        let mut stdin = tokio::io::stdin();
        let mut sink = Vec::new();
        tokio::select! {
            _ = stdin.read_to_end(&mut sink) => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    });
    drop(lv);
}
