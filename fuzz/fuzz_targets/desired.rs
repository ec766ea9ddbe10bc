//! Desired-state documents (`vdev plan` / `vdev apply` files, JSON or YAML) as a user writes
//! them: parsed; a document that parses reads back the same from its own JSON and YAML; and it
//! is planned against the mock's in-memory host (the planner matches, compares and refuses
//! without changing anything).
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vdev_core::{Connection, Document};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

fn connection() -> Connection {
    let uri = vdev_core::ConnectUri::parse("mock:///default").expect("a URI");
    let config = vdev_driver_mock::MockConfig::from_uri(&uri).expect("a mock URI");
    let driver = vdev_driver_mock::MockDriver::open_blocking(config).expect("the mock host");
    Connection::from_driver("mock", uri, Box::new(driver))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(doc) = Document::parse(text) else {
        return;
    };
    assert_eq!(Document::parse(&doc.to_json()).expect("its own JSON"), doc);
    assert_eq!(Document::parse(&doc.to_yaml()).expect("its own YAML"), doc);
    let conn = connection();
    runtime().block_on(async {
        let before = conn.devices(&conn.domain("demo").await.unwrap(), None).await.unwrap();
        let _ = conn.plan(&doc).await;
        let after = conn.devices(&conn.domain("demo").await.unwrap(), None).await.unwrap();
        assert_eq!(before, after, "a plan changed the host");
    });
});
