//! What the QEMU driver's benchmarks share: medians, milliseconds, the disk they attach.
#![allow(dead_code)]

use std::time::Duration;

use vdev_core::Attributes;

/// The median (the upper one for an even count).
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A raw image as a SCSI disk.
pub fn disk(img: &str) -> Attributes {
    Attributes::from_pairs([
        ("source", img.to_owned()),
        ("format", "raw".into()),
        ("bus", "scsi".into()),
    ])
    .unwrap()
}
