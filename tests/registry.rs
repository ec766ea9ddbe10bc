//! The driver registry and URI dispatch, as an application sees them.

use vdev_core::{ConnectUri, Error};
use vdev_driver_mock as _;

#[test]
fn lists_the_linked_drivers_with_their_schemes() {
    let drivers = vdev_core::drivers();
    let mock = drivers
        .iter()
        .find(|d| d.name == "mock")
        .expect("mock is registered");
    assert_eq!(mock.schemes, vec!["mock", "test"]);
    assert_eq!(vdev_core::registered_schemes(), vec!["mock", "test"]);
    vdev_core::check_registry().expect("no scheme is claimed twice");
}

#[tokio::test]
async fn an_unknown_scheme_lists_the_schemes_that_exist() {
    let err = vdev_core::connect("hyperv:///x").await.unwrap_err();
    match &err {
        Error::NoDriver { scheme, available } => {
            assert_eq!(scheme, "hyperv");
            assert_eq!(available, &["mock", "test"]);
        }
        other => panic!("expected NoDriver, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("'hyperv'") && msg.contains("mock, test"),
        "{msg}"
    );
}

#[tokio::test]
async fn the_test_scheme_and_transports_reach_the_mock() {
    let conn = vdev_core::connect("test:///default")
        .await
        .expect("test:// is the mock");
    assert_eq!(conn.driver_name(), "mock");
    // The mock has no transports: the driver refuses one, naming it.
    let err = vdev_core::connect("mock+ssh:///default").await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidUri { reason, .. } if reason.contains("transport 'ssh'")),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_uris_and_unknown_options_are_refused() {
    for (uri, says) in [
        ("not a uri", "DRIVER[+TRANSPORT]://"),
        ("mock:default", "missing '//'"),
        ("mock:///default?bogus=1", "unknown option 'bogus'"),
        ("mock:///default?readonly=maybe", "not a boolean"),
        ("mock:///default?latency=1ms&latency=2ms", "more than once"),
        ("mock:///relative.txt", "/default"),
        ("mock://somehost/default", "takes no host"),
        (
            "mock:///default?fail=attach:0:backend",
            "call number from 1",
        ),
        (
            "mock:///default?fail=attach:1:nonsense",
            "unknown error code",
        ),
        (
            "mock:///default?fail=frobnicate:1:backend",
            "unknown operation",
        ),
        ("mock:///default?removal=later", "removal=later"),
    ] {
        let err = vdev_core::connect(uri).await.expect_err(uri);
        assert!(matches!(err, Error::InvalidUri { .. }), "{uri}: {err:?}");
        assert!(
            err.to_string().contains(says),
            "{uri}: '{err}' should say '{says}'"
        );
    }
}

#[tokio::test]
async fn readonly_in_the_uri_or_the_call_gives_a_readonly_connection() {
    let a = vdev_core::connect("mock:///default?readonly")
        .await
        .unwrap();
    let b = vdev_core::connect_readonly("mock:///default")
        .await
        .unwrap();
    let c = vdev_core::connect("mock:///default?readonly=0")
        .await
        .unwrap();
    assert!(a.is_read_only() && b.is_read_only() && !c.is_read_only());
}

#[test]
fn debug_and_display_hide_passwords() {
    let u = ConnectUri::parse("mock+tcp://admin:s3cret@host:1234/default?x=1").unwrap();
    assert_eq!(u.driver(), "mock");
    assert_eq!(u.transport(), Some("tcp"));
    assert_eq!(u.user().as_deref(), Some("admin"));
    assert!(!format!("{u} {u:?}").contains("s3cret"));
    let err = ConnectUri::parse("mock:///default?readonly=maybe").unwrap_err();
    assert!(!err.to_string().contains("s3cret"));
    let err = ConnectUri::parse("mock://admin:s3cret@host/default?readonly=maybe").unwrap_err();
    assert!(!err.to_string().contains("s3cret"), "{err}");
}
