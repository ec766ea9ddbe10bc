//! Attach+detach cycles per second on the mock, in Rust, in process, through `vdev::Connection`:
//! the figure `bench/bench.py` prints beside Python's. `cargo run --release -p vdev-py --example
//! cycles -- SECONDS`.

use std::time::{Duration, Instant};

fn main() -> Result<(), vdev::Error> {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let conn = vdev::connect("mock:///default").await?;
        let demo = conn.domain("demo").await?;
        let attrs = vdev::Attributes::from_pairs([
            ("uname", "file:/img/b.raw"),
            ("dev", "xvdb"),
            ("mode", "w"),
        ])?;
        let opts = vdev::DetachOptions::default();
        let (mut n, start) = (0u64, Instant::now());
        while start.elapsed() < Duration::from_secs_f64(seconds) {
            for _ in 0..1000 {
                let r = conn.attach(&demo, &vdev::DeviceType::DISK, &attrs).await?;
                conn.detach(&demo, &vdev::DeviceType::DISK, &r, &opts)
                    .await?;
            }
            n += 1000;
        }
        println!("{:.0}", n as f64 / start.elapsed().as_secs_f64());
        Ok(())
    })
}
