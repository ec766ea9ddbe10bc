//! Mock state files as any process (or person) may have written them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(st) = serde_json::from_slice::<vdev_driver_mock::HostState>(data) else {
        return;
    };
    if st.validate().is_err() {
        return;
    }
    let _ = st.schemas();
    for d in st.domains.values() {
        let dom = vdev_core::Domain::new(Some(d.id), d.name.clone());
        let _ = st.list(&dom, None);
    }
});
