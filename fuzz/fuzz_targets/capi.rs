//! The C API (libvdev) as a C program calls it, with what a C program may pass: `vdev_vda`
//! arrays of any bytes (names and values with or without a NUL), any counts and sizes within
//! the arrays given, any strings for types, references and attribute pairs, any detach flags.
//!
//! The input is a sequence of calls on one connection to the mock's in-memory host. After each
//! call the target checks what a C caller relies on:
//! - `vdev_domain_get_vdevs` writes exactly N*A entries, every written name and value
//!   NUL-terminated within its field, padding entries all zero, and nothing past N*A;
//! - a call that fails leaves the domain's devices exactly as they were (as listed with
//!   `vdev_domain_list_devices` after it, and before it or after the last call that could change
//!   them), and leaves an error code and a message.
//!
//! libvdev has no rlib (its library name, `vdev`, is the facade's), so this target compiles the
//! C API's sources as modules of its own, laid out as `crates/vdev-capi/src/lib.rs` lays them
//! out; the functions are the same code the library exports.
#![no_main]
#![allow(non_camel_case_types, dead_code, unused_imports)]

#[path = "../../crates/vdev-capi/src/conn.rs"]
mod conn;
#[path = "../../crates/vdev-capi/src/desired.rs"]
mod desired;
#[path = "../../crates/vdev-capi/src/devices.rs"]
mod devices;
#[path = "../../crates/vdev-capi/src/domains.rs"]
mod domains;
#[path = "../../crates/vdev-capi/src/error.rs"]
mod error;
#[path = "../../crates/vdev-capi/src/events.rs"]
mod events;
#[path = "../../crates/vdev-capi/src/marshal.rs"]
mod marshal;
#[path = "../../crates/vdev-capi/src/proposal.rs"]
mod proposal;

use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

use conn::{vdev_conn, vdev_conn_open};
use devices::{
    vdev_attr, vdev_device, vdev_device_list_free, vdev_domain_attach, vdev_domain_detach,
    vdev_domain_list_devices,
};
use domains::{vdev_domain, vdev_domain_lookup_by_name};
use error::{vdev_last_error_code, vdev_last_error_message};
use proposal::{
    vdev_domain_create_vdev, vdev_domain_destroy_vdev, vdev_domain_get_vdevs,
    vdev_domain_update_vdev, vdev_vda,
};

/// The connection and the domain every input works on (opened once: each connection starts a
/// runtime thread).
struct Target {
    conn: *mut vdev_conn,
    dom: *mut vdev_domain,
}
unsafe impl Send for Target {}
unsafe impl Sync for Target {}

fn target() -> &'static Target {
    static T: OnceLock<Target> = OnceLock::new();
    T.get_or_init(|| {
        let uri = CString::new("mock:///default").unwrap();
        let conn: *mut vdev_conn = unsafe { vdev_conn_open(uri.as_ptr()) };
        assert!(!conn.is_null());
        let name = CString::new("demo").unwrap();
        let dom = unsafe { vdev_domain_lookup_by_name(conn, name.as_ptr()) };
        assert!(!dom.is_null());
        Target { conn, dom }
    })
}

/// Reads the input a piece at a time; past its end, zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.to_vec()
    }
    /// A C string: a known word, or up to 96 bytes of the input (NULs dropped).
    fn string(&mut self, words: &[&str]) -> CString {
        let pick = self.byte() as usize;
        if pick < words.len() * 32 {
            return CString::new(words[pick % words.len()]).unwrap();
        }
        let len = self.byte() as usize % 97;
        let mut b = self.bytes(len);
        b.retain(|&c| c != 0);
        CString::new(b).unwrap()
    }
    /// A fixed field: a known word (NUL-padded) or raw bytes, with or without a NUL.
    fn field<const N: usize>(&mut self, words: &[&str]) -> [c_char; N] {
        let mut f = [0 as c_char; N];
        if self.byte() % 4 == 0 {
            for (d, s) in f.iter_mut().zip(self.bytes(N)) {
                *d = s as c_char;
            }
        } else {
            let w = self.string(words);
            for (d, s) in f.iter_mut().zip(w.as_bytes().iter().take(N - 1)) {
                *d = *s as c_char;
            }
        }
        f
    }
}

const TYPES: &[&str] = &["disk", "network", "cdrom", "nosuch", ""];
const NAMES: &[&str] = &[
    "uname",
    "dev",
    "mode",
    "backend",
    "mac",
    "bridge",
    "link",
    "devtype",
    "handle",
    "script",
    "virtual-device",
    "bogus",
];
const VALUES: &[&str] = &[
    "phy:/dev/vg/data",
    "file:/images/a.img",
    "xvdb",
    "xvdc",
    "w",
    "r",
    "0",
    "Domain-0",
    "storage",
    "00:16:3e:00:00:01",
    "down",
    "up",
    "cdrom",
    "51728",
];
const REFS: &[&str] = &["51712", "51728", "51744", "0", "1", "../x", ""];

/// Every device of the domain, as one heap listing of every type gives it.
type Snapshot = Vec<(String, String, String, Vec<(String, String)>)>;

fn snapshot(dom: *mut vdev_domain) -> Snapshot {
    let mut devs: *mut vdev_device = std::ptr::null_mut();
    let n = unsafe { vdev_domain_list_devices(dom, std::ptr::null(), &mut devs) };
    assert!(n >= 0, "listing the mock domain failed");
    if n == 0 {
        return Vec::new();
    }
    let list = unsafe { std::slice::from_raw_parts(devs, n as usize) };
    let s = |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    let out = list
        .iter()
        .map(|d| {
            let attrs = if d.nattrs == 0 {
                Vec::new()
            } else {
                unsafe { std::slice::from_raw_parts(d.attrs, d.nattrs) }
                    .iter()
                    .map(|a| (s(a.name), s(a.value)))
                    .collect()
            };
            (s(d.device_type), s(d.reference), s(d.state), attrs)
        })
        .collect();
    unsafe { vdev_device_list_free(devs, n) };
    out
}

/// A call failed: it said why, and changed nothing.
fn failed_cleanly(what: &str, before: &Snapshot, dom: *mut vdev_domain) {
    assert_ne!(
        vdev_last_error_code(),
        0,
        "{what} failed without an error code"
    );
    let msg = unsafe { CStr::from_ptr(vdev_last_error_message()) };
    assert!(
        !msg.to_bytes().is_empty(),
        "{what} failed without a message"
    );
    assert_eq!(
        &snapshot(dom),
        before,
        "{what} failed but changed the devices"
    );
}

fuzz_target!(|data: &[u8]| {
    let dom = target().dom;
    let baseline = snapshot(dom);
    // The devices as last listed, while no call since can have changed them: a failed call is
    // checked to have changed nothing, and a listing or lookup changes nothing.
    let mut known = Some(baseline.clone());
    let mut changed_any = false;
    let mut input = Input(data);
    for _ in 0..8 {
        if input.0.is_empty() {
            break;
        }
        let before = known.take().unwrap_or_else(|| snapshot(dom));
        // Whether a call succeeded that may have changed the devices.
        let changed = match input.byte() % 7 {
            0 | 1 => {
                // The proposal's create (or update) over fixed-size entries.
                let update = input.byte() % 2 == 1;
                let t = input.string(TYPES);
                let r = input.string(REFS);
                let n = input.byte() as usize % 7;
                let attrs: Vec<vdev_vda> = (0..n)
                    .map(|_| vdev_vda {
                        name: input.field::<16>(NAMES),
                        value: input.field::<64>(VALUES),
                    })
                    .collect();
                // Any count the array allows, sometimes a negative one, sometimes NULL.
                let count = (input.byte() as c_int % (n as c_int + 2)) - 1;
                let ptr = if n == 0 && input.byte() % 2 == 0 {
                    std::ptr::null()
                } else {
                    attrs.as_ptr()
                };
                let rc = unsafe {
                    if update {
                        vdev_domain_update_vdev(dom, t.as_ptr(), r.as_ptr(), ptr, count)
                    } else {
                        vdev_domain_create_vdev(dom, t.as_ptr(), ptr, count)
                    }
                };
                if rc != 0 {
                    assert_eq!(rc, -1);
                    failed_cleanly("create/update_vdev", &before, dom);
                }
                rc == 0
            }
            2 => {
                // The proposal's listing into a caller's array.
                let t = input.string(TYPES);
                const LEN: usize = 48;
                let mut buf = [vdev_vda {
                    name: [0x55; 16],
                    value: [0x55; 64],
                }; LEN];
                let null = input.byte() % 5 == 0;
                let max = (input.byte() as c_int % (LEN as c_int + 2)) - 1;
                let (ptr, max) = if null {
                    (std::ptr::null_mut(), if max > 0 { 0 } else { max })
                } else {
                    (buf.as_mut_ptr(), max)
                };
                let rc = unsafe { vdev_domain_get_vdevs(dom, t.as_ptr(), ptr, max) };
                if rc < 0 {
                    assert_eq!(rc, -1);
                    failed_cleanly("get_vdevs", &before, dom);
                    assert!(buf
                        .iter()
                        .all(|e| e.name == [0x55; 16] && e.value == [0x55; 64]));
                } else {
                    let (n, a) = ((rc & 0xFFFF) as usize, (rc >> 16) as usize);
                    let written = if null { 0 } else { n * a };
                    assert!(written <= LEN);
                    for e in &buf[..written] {
                        let name = CStr::from_bytes_until_nul(bytes(&e.name)).expect("name NUL");
                        let value = CStr::from_bytes_until_nul(bytes(&e.value)).expect("value NUL");
                        if name.is_empty() {
                            assert!(value.is_empty(), "padding with a value");
                            assert!(e.name.iter().chain(&e.value).all(|&c| c == 0));
                        }
                    }
                    assert!(buf[written..]
                        .iter()
                        .all(|e| e.name == [0x55; 16] && e.value == [0x55; 64]));
                }
                false
            }
            3 => {
                // The proposal's destroy.
                let t = input.string(TYPES);
                let r = input.string(REFS);
                let rc = unsafe { vdev_domain_destroy_vdev(dom, t.as_ptr(), r.as_ptr()) };
                if rc != 0 {
                    failed_cleanly("destroy_vdev", &before, dom);
                }
                rc == 0
            }
            4 => {
                // Attach over heap strings of any length.
                let t = input.string(TYPES);
                let n = input.byte() as usize % 6;
                let strings: Vec<(CString, CString)> = (0..n)
                    .map(|_| (input.string(NAMES), input.string(VALUES)))
                    .collect();
                let attrs: Vec<vdev_attr> = strings
                    .iter()
                    .map(|(n, v)| vdev_attr {
                        name: n.as_ptr(),
                        value: v.as_ptr(),
                    })
                    .collect();
                let count = (input.byte() as c_int % (n as c_int + 2)) - 1;
                let r = unsafe { vdev_domain_attach(dom, t.as_ptr(), attrs.as_ptr(), count) };
                if r.is_null() {
                    failed_cleanly("attach", &before, dom);
                    false
                } else {
                    unsafe { devices::vdev_string_free(r) };
                    true
                }
            }
            5 => {
                // Detach with any timeout and flags.
                let t = input.string(TYPES);
                let r = input.string(REFS);
                let timeout = (input.byte() as c_int % 8) - 2;
                let flags = input.byte() as u32;
                let rc = unsafe { vdev_domain_detach(dom, t.as_ptr(), r.as_ptr(), timeout, flags) };
                if rc < 0 {
                    failed_cleanly("detach", &before, dom);
                }
                rc >= 0
            }
            _ => {
                // A lookup by any name.
                let conn = target().conn;
                let name = input.string(&["demo", "Domain-0", "storage"]);
                let d = unsafe { vdev_domain_lookup_by_name(conn, name.as_ptr()) };
                if !d.is_null() {
                    unsafe { domains::vdev_domain_free(d) };
                }
                false
            }
        };
        if changed {
            changed_any = true;
        } else {
            known = Some(before);
        }
    }
    // Leave the host as this input found it (the devices it added removed), so that state does
    // not grow over a run.
    if !changed_any {
        return;
    }
    for (t, r, _, _) in snapshot(dom) {
        if !baseline.iter().any(|(bt, br, _, _)| *bt == t && *br == r) {
            let (t, r) = (CString::new(t).unwrap(), CString::new(r).unwrap());
            unsafe {
                vdev_domain_detach(dom, t.as_ptr(), r.as_ptr(), 0, devices::VDEV_DETACH_FORCE)
            };
        }
    }
});

fn bytes(f: &[c_char]) -> &[u8] {
    unsafe { &*(f as *const [c_char] as *const [u8]) }
}
