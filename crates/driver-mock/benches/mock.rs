//! Mock driver, in process: attach+detach cycles per second, and listing a domain with 10,000
//! devices. Each is measured through the public `Connection` (what applications use) beside the
//! same calls made on the driver directly, so the core's own cost shows.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vdev_core::{Attributes, ConnectUri, DetachOptions, DeviceType, Driver};
use vdev_driver_mock::{MockConfig, MockDriver};

fn disk(i: usize) -> Attributes {
    let n = xen_devid::devid_from_name(&format!("d{}", i + 1)).unwrap();
    Attributes::from_pairs([
        ("uname", format!("file:/img/{i}.img")),
        ("dev", xen_devid::name_from_devid(n).unwrap()),
        ("mode", "w".to_owned()),
    ])
    .unwrap()
}

fn open() -> MockDriver {
    open_uri("mock:///default")
}

fn open_uri(uri: &str) -> MockDriver {
    MockDriver::open_blocking(MockConfig::from_uri(&ConnectUri::parse(uri).unwrap()).unwrap())
        .unwrap()
}

fn cycles(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("attach+detach cycle");
    g.throughput(Throughput::Elements(1));
    let attrs = disk(1);
    let opts = DetachOptions::default();

    let conn = vdev_core::Connection::from_driver(
        "mock",
        ConnectUri::parse("mock:///default").unwrap(),
        Box::new(open()),
    );
    let demo = rt.block_on(conn.domain("demo")).unwrap();
    g.bench_function("through Connection", |b| {
        b.to_async(&rt).iter(|| async {
            let r = conn.attach(&demo, &DeviceType::DISK, &attrs).await.unwrap();
            conn.detach(&demo, &DeviceType::DISK, &r, &opts)
                .await
                .unwrap();
        })
    });

    // The same cycle on a host speaking like QEMU (a disk by image and format; the image must
    // exist, as QEMU checks).
    let image = tempfile::NamedTempFile::new().unwrap();
    let qemu_disk = Attributes::from_pairs([
        ("source", image.path().display().to_string()),
        ("format", "raw".to_owned()),
    ])
    .unwrap();
    let like_uri = "mock:///default?like=qemu";
    let conn_qemu = vdev_core::Connection::from_driver(
        "mock",
        ConnectUri::parse(like_uri).unwrap(),
        Box::new(open_uri(like_uri)),
    );
    let demo_qemu = rt.block_on(conn_qemu.domain("demo")).unwrap();
    g.bench_function("through Connection, like=qemu", |b| {
        b.to_async(&rt).iter(|| async {
            let r = conn_qemu
                .attach(&demo_qemu, &DeviceType::DISK, &qemu_disk)
                .await
                .unwrap();
            conn_qemu
                .detach(&demo_qemu, &DeviceType::DISK, &r, &opts)
                .await
                .unwrap();
        })
    });

    let driver = open();
    g.bench_function("driver directly", |b| {
        b.to_async(&rt).iter(|| async {
            let r = driver
                .attach(&demo, &DeviceType::DISK, &attrs, &Default::default())
                .await
                .unwrap();
            driver
                .detach(&demo, &DeviceType::DISK, &r, &opts)
                .await
                .unwrap();
        })
    });
    g.finish();
}

fn listing(c: &mut Criterion) {
    const N: usize = 10_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let conn = vdev_core::Connection::from_driver(
        "mock",
        ConnectUri::parse("mock:///default").unwrap(),
        Box::new(open()),
    );
    let demo = rt.block_on(conn.domain("demo")).unwrap();
    rt.block_on(async {
        for i in 1..N {
            conn.attach(&demo, &DeviceType::DISK, &disk(i))
                .await
                .unwrap();
        }
    });
    let n = rt
        .block_on(conn.devices(&demo, Some(&DeviceType::DISK)))
        .unwrap()
        .len();
    assert_eq!(n, N);
    let mut g = c.benchmark_group("list 10,000 disks");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("through Connection", |b| {
        b.to_async(&rt)
            .iter(|| async { conn.devices(&demo, Some(&DeviceType::DISK)).await.unwrap() })
    });
    let driver = open();
    rt.block_on(async {
        for i in 1..N {
            driver
                .attach(&demo, &DeviceType::DISK, &disk(i), &Default::default())
                .await
                .unwrap();
        }
    });
    g.bench_function("driver directly", |b| {
        b.to_async(&rt).iter(|| async {
            driver
                .list_devices(&demo, Some(&DeviceType::DISK))
                .await
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, cycles, listing);
criterion_main!(benches);
