//! Depending on the `vdev` facade is enough: its features link the drivers. This file names no
//! driver crate.

#[tokio::test]
async fn the_facade_links_the_mock_driver() {
    assert!(vdev::drivers().iter().any(|d| d.name == "mock"));
    let conn = vdev::connect("mock:///default")
        .await
        .expect("mock reachable through the facade");
    assert_eq!(conn.domains().await.unwrap().len(), 2);
}
