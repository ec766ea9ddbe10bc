//! Two drivers claiming one scheme are reported, not resolved by link order.

use vdev_core::prelude::BoxFuture;
use vdev_core::{ConnectUri, Driver, Error, Result};

fn never(uri: ConnectUri) -> BoxFuture<'static, Result<Box<dyn Driver>>> {
    Box::pin(async move { Err(uri.invalid("this test driver never opens")) })
}

// One registration per module, as one per driver crate.
mod one {
    vdev_core::register_driver!(name: "dup-one", schemes: &["dup"], description: "test", open: super::never);
}
mod two {
    vdev_core::register_driver!(name: "dup-two", schemes: &["dup", "solo"], description: "test", open: super::never);
}

#[tokio::test]
async fn a_scheme_claimed_twice_is_an_error_naming_both_drivers() {
    let err = vdev_core::connect("dup:///x").await.unwrap_err();
    match &err {
        Error::DuplicateScheme { scheme, drivers } => {
            assert_eq!(scheme, "dup");
            assert_eq!(drivers, &["dup-one", "dup-two"]);
        }
        other => panic!("expected DuplicateScheme, got {other:?}"),
    }
    assert!(err.to_string().contains("dup-one, dup-two"));
    assert!(matches!(
        vdev_core::check_registry(),
        Err(Error::DuplicateScheme { .. })
    ));
    // The other scheme of the second driver still dispatches to it.
    let err = vdev_core::connect("solo:///x").await.unwrap_err();
    assert!(err.to_string().contains("never opens"), "{err}");
}
