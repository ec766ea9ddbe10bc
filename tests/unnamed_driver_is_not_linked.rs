//! The linking trap, demonstrated: this test binary depends on the mock driver crate (the package
//! does) but no code here names it, so it is not linked and its scheme is unknown. This is why the
//! docs tell users to name driver crates or use the `vdev` facade.

#[tokio::test]
async fn a_driver_crate_nothing_names_is_absent() {
    let err = vdev_core::connect("mock:///default").await.unwrap_err();
    assert!(matches!(err, vdev_core::Error::NoDriver { .. }), "{err:?}");
    assert!(err.to_string().contains("names its crate"), "{err}");
}
