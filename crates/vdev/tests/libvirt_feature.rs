//! The `libvirt` feature: without it a `libvirt+...` URI says how to get the driver; with it
//! the scheme reaches libvirt.

#[cfg(not(feature = "libvirt"))]
#[tokio::test]
async fn without_the_feature_a_libvirt_uri_says_how_to_get_the_driver() {
    let err = vdev::connect("libvirt+qemu:///system").await.unwrap_err();
    assert!(matches!(err, vdev::Error::NoDriver { .. }), "{err:?}");
    let msg = err.to_string();
    for words in [
        "cargo feature `libvirt`",
        "libvirt-dev",
        "pkg-config",
        "LGPL-2.1",
    ] {
        assert!(msg.contains(words), "{msg}");
    }
    assert!(!vdev::drivers().iter().any(|d| d.name == "libvirt"));
}

#[cfg(not(feature = "libvirt"))]
#[tokio::test]
async fn another_unknown_scheme_keeps_the_linking_advice() {
    let err = vdev::connect("nosuch:///x").await.unwrap_err();
    assert!(err.to_string().contains("names its crate"), "{err}");
}

#[cfg(feature = "libvirt")]
#[tokio::test]
async fn with_the_feature_the_scheme_reaches_libvirt() {
    assert!(vdev::drivers().iter().any(|d| d.name == "libvirt"));
    let missing = std::env::temp_dir().join("vdev-no-such-libvirt-sock");
    let uri = format!("libvirt+qemu:///system?socket={}", missing.display());
    let err = vdev::connect(&uri).await.unwrap_err();
    assert!(matches!(err, vdev::Error::Backend { .. }), "{err:?}");
    let chain = std::error::Error::source(&err)
        .map(|s| s.to_string())
        .unwrap_or_default();
    assert!(
        chain.contains("vdev-no-such-libvirt-sock"),
        "{err}: {chain}"
    );
}
