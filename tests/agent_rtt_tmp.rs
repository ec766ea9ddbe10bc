use std::time::{Duration, Instant};
use vdev_conformance::sshd::Sshd;
use vdev_core::remote::Host;
#[tokio::test]
async fn rtt() {
    let sshd = Sshd::start().unwrap();
    let h = Host::from_uri(&vdev_core::ConnectUri::parse(&format!("qemu+ssh://{}/x?{}", sshd.authority(), sshd.query())).unwrap(), Duration::from_secs(10)).unwrap();
    h.run("true", Duration::from_secs(10)).await.unwrap();
    let long = format!("__vdev_p='{}'; if [ -d \"$__vdev_p\" ]; then echo d; elif [ -S \"$__vdev_p\" ]; then echo s; elif [ -e \"$__vdev_p\" ]; then echo o; elif [ -b \"$__vdev_p\" ]; then echo o; elif [ -f \"$__vdev_p\" ]; then echo o; elif [ -c \"$__vdev_p\" ]; then echo o; elif [ -p \"$__vdev_p\" ]; then echo o; else echo m; fi", "/tmp/some/long/path/to/an/image/file.raw");
    let mut v = vec![];
    for _ in 0..200 { let t = Instant::now(); h.call("__vdev_t", "if [ -f \"$1\" ]; then echo f; elif [ -d \"$1\" ]; then echo d; else echo m; fi", &["/tmp/some/long/path/to/an/image/file.raw", "raw"], Duration::from_secs(10)).await.unwrap(); v.push(t.elapsed()); }
    v.sort(); eprintln!("call: median {:?}", v[100]);
    for (name, script, main) in [("short sub", ":", false), ("short main", ":", true), ("long main", long.as_str(), true), ("long sub", long.as_str(), false)] {
        let mut v = vec![];
        for _ in 0..200 {
            let t = Instant::now();
            if main { h.run_in_session(script, Duration::from_secs(10)).await.unwrap(); } else { h.run(script, Duration::from_secs(10)).await.unwrap(); }
            v.push(t.elapsed());
        }
        v.sort();
        eprintln!("{name}: median {:?} p10 {:?}", v[100], v[20]);
    }
}
