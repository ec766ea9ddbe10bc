//! Xen virtual block device numbers, as Xen's `docs/misc/vbd-interface` defines them.
//!
//! A Xen disk is referred to in XenStore by a number derived from its name (`xvdb` → 51728).
//! This crate turns names into numbers and back, for the vdev mock and Xen drivers.
//!
//! | name | number |
//! |---|---|
//! | `xvdX[N]`, disk < 16 and partition < 16 | `202 << 8 \| disk << 4 \| partition` |
//! | `xvdX[N]`, otherwise (extended) | `1 << 28 \| disk << 8 \| partition` (disk < 2^20, partition < 256) |
//! | `sdX[N]`, disk < 16, partition < 16 | `8 << 8 \| disk << 4 \| partition` |
//! | `hdX[N]`, disk 0..=1, partition < 64 | `3 << 8 \| disk << 6 \| partition` |
//! | `hdX[N]`, disk 2..=3, partition < 64 | `22 << 8 \| (disk - 2) << 6 \| partition` |
//! | `dDpP` (numeric xvd form) | as `xvd` |
//! | a plain decimal number | itself (1 to 536870911, below `1 << 29`) |
//!
//! Disk letters count like spreadsheet columns: `a` = 0, `z` = 25, `aa` = 26.
#![deny(missing_docs)]

use std::fmt;

/// Why a device name has no Xen number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevIdError {
    /// The name that was given.
    pub name: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl fmt::Display for DevIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "'{}' is not a Xen virtual device name: {}; use xvdX, sdX, hdX (optionally with a partition number, e.g. xvdb1), dNpM, or a device number",
            self.name.escape_default(),
            self.reason
        )
    }
}

impl std::error::Error for DevIdError {}

const XVD_MAJOR: u32 = 202;
const SD_MAJOR: u32 = 8;
const HD_MAJOR_1: u32 = 3;
const HD_MAJOR_2: u32 = 22;
const EXTENDED: u32 = 1 << 28;
const RESERVED: u32 = 1 << 29;

/// Turn a device name (`xvdb`, `hda1`, `sdc`, `d3p1`, `51728`) into its Xen device number.
///
/// ```
/// assert_eq!(xen_devid::devid_from_name("xvda"), Ok(51712));
/// assert_eq!(xen_devid::devid_from_name("xvdb"), Ok(51728));
/// assert_eq!(xen_devid::devid_from_name("xvdq"), Ok((1 << 28) | (16 << 8)));
/// ```
pub fn devid_from_name(name: &str) -> Result<u32, DevIdError> {
    let err = |reason| DevIdError {
        name: name.to_owned(),
        reason,
    };
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        let n: u32 = name.parse().map_err(|_| err("the number is too large"))?;
        return if n >= RESERVED || n == 0 {
            Err(err("device numbers are 1 to 536870911"))
        } else {
            Ok(n)
        };
    }
    if let Some(rest) = name.strip_prefix('d') {
        // dDpP
        let (disk, part) = match rest.split_once('p') {
            Some((d, p)) => (d, Some(p)),
            None => (rest, None),
        };
        if !disk.is_empty() && disk.bytes().all(|b| b.is_ascii_digit()) {
            let disk: u32 = disk
                .parse()
                .map_err(|_| err("the disk number is too large"))?;
            let part = match part {
                None | Some("0") => 0,
                Some(p) => parse_partition(p).ok_or_else(|| err("bad partition number"))?,
            };
            return xvd(disk, part).ok_or_else(|| err("disk or partition number out of range"));
        }
    }
    let (prefix, rest) = if let Some(r) = name.strip_prefix("xvd") {
        ("xvd", r)
    } else if let Some(r) = name.strip_prefix("sd") {
        ("sd", r)
    } else if let Some(r) = name.strip_prefix("hd") {
        ("hd", r)
    } else {
        return Err(err("unknown prefix"));
    };
    let letters_end = rest
        .find(|c: char| !c.is_ascii_lowercase())
        .unwrap_or(rest.len());
    let (letters, digits) = rest.split_at(letters_end);
    if letters.is_empty() {
        return Err(err("no disk letter after the prefix"));
    }
    let disk = letters_to_disk(letters).ok_or_else(|| err("too many disk letters"))?;
    let part = if digits.is_empty() {
        0
    } else {
        parse_partition(digits).ok_or_else(|| err("bad partition number"))?
    };
    let n = match prefix {
        "xvd" => xvd(disk, part),
        "sd" if disk < 16 && part < 16 => Some((SD_MAJOR << 8) | (disk << 4) | part),
        "hd" if disk < 2 && part < 64 => Some((HD_MAJOR_1 << 8) | (disk << 6) | part),
        "hd" if disk < 4 && part < 64 => Some((HD_MAJOR_2 << 8) | ((disk - 2) << 6) | part),
        _ => None,
    };
    n.ok_or_else(|| err("disk or partition number out of range for this prefix"))
}

fn xvd(disk: u32, part: u32) -> Option<u32> {
    if disk < 16 && part < 16 {
        Some((XVD_MAJOR << 8) | (disk << 4) | part)
    } else if disk < (1 << 20) && part < 256 {
        Some(EXTENDED | (disk << 8) | part)
    } else {
        None
    }
}

fn parse_partition(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

fn letters_to_disk(letters: &str) -> Option<u32> {
    let mut disk: u32 = 0;
    for b in letters.bytes() {
        disk = disk.checked_mul(26)?.checked_add(u32::from(b - b'a') + 1)?;
    }
    let d = disk - 1;
    (d < (1 << 20)).then_some(d)
}

fn disk_to_letters(mut disk: u32) -> String {
    let mut out = Vec::new();
    disk += 1;
    while disk > 0 {
        disk -= 1;
        out.push(b'a' + (disk % 26) as u8);
        disk /= 26;
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// The name of Xen's whole disk number `disk` (0 = `xvda`, 25 = `xvdz`, 26 = `xvdaa`): the
/// letters Xen's vbd-interface rules give disks, as `xl` and the guest spell them.
///
/// ```
/// assert_eq!(xen_devid::xvd_name(1), "xvdb");
/// assert_eq!(xen_devid::xvd_name(26), "xvdaa");
/// assert_eq!(xen_devid::devid_from_name(&xen_devid::xvd_name(26)).unwrap(), (1 << 28) | (26 << 8));
/// ```
pub fn xvd_name(disk: u32) -> String {
    format!("xvd{}", disk_to_letters(disk))
}

/// The canonical name of a Xen device number (`51728` → `xvdb`), or `None` when the number is
/// not in any named range.
///
/// ```
/// assert_eq!(xen_devid::name_from_devid(51728).as_deref(), Some("xvdb"));
/// assert_eq!(xen_devid::name_from_devid(769).as_deref(), Some("hda1"));
/// ```
pub fn name_from_devid(n: u32) -> Option<String> {
    let with_part = |prefix: &str, disk: u32, part: u32| {
        let mut s = format!("{prefix}{}", disk_to_letters(disk));
        if part != 0 {
            s.push_str(&part.to_string());
        }
        s
    };
    if n & EXTENDED != 0 && n < RESERVED {
        return Some(with_part("xvd", (n >> 8) & 0xfffff, n & 0xff));
    }
    match n >> 8 {
        XVD_MAJOR => Some(with_part("xvd", (n >> 4) & 0xf, n & 0xf)),
        SD_MAJOR => Some(with_part("sd", (n >> 4) & 0xf, n & 0xf)),
        HD_MAJOR_1 => Some(with_part("hd", (n >> 6) & 0x3, n & 0x3f)),
        HD_MAJOR_2 => Some(with_part("hd", 2 + ((n >> 6) & 0x3), n & 0x3f)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_from_vbd_interface() {
        let table: &[(&str, u32)] = &[
            ("xvda", 51712),
            ("xvdb", 51728),
            ("xvda1", 51713),
            ("xvdp", 51952),
            ("xvdp15", 51967),
            ("xvdq", (1 << 28) | (16 << 8)),
            ("xvdz", (1 << 28) | (25 << 8)),
            ("xvdaa", (1 << 28) | (26 << 8)),
            ("xvdaa1", (1 << 28) | (26 << 8) | 1),
            ("xvdb16", (1 << 28) | (1 << 8) | 16),
            ("sda", 2048),
            ("sdb", 2064),
            ("sdb3", 2067),
            ("hda", 768),
            ("hdb", 832),
            ("hda1", 769),
            ("hdc", 5632),
            ("hdd", 5696),
            ("hdd63", 5759),
            ("d0p0", 51712),
            ("d1", 51728),
            ("d16p1", (1 << 28) | (16 << 8) | 1),
            ("51728", 51728),
        ];
        for (name, n) in table {
            assert_eq!(devid_from_name(name), Ok(*n), "{name}");
        }
    }

    #[test]
    fn refuses_what_xen_refuses() {
        for bad in [
            "",
            "xvd",
            "xvdA",
            "vda",
            "sdq",
            "hde",
            "hda64",
            "xvdb0",
            "xvdb01",
            "0",
            "536870912",
            "../x",
            "xvdb/",
            "xvdb 1",
            "dp1",
        ] {
            assert!(devid_from_name(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn xvd_names_of_disk_numbers_round_trip() {
        for k in 0..2000 {
            let name = xvd_name(k);
            let n = devid_from_name(&name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                name_from_devid(n).as_deref(),
                Some(name.as_str()),
                "disk {k}"
            );
        }
        assert_eq!(xvd_name(701), "xvdzz");
        assert_eq!(xvd_name(702), "xvdaaa");
    }

    #[test]
    fn names_round_trip() {
        for name in [
            "xvda", "xvdb", "xvdp15", "xvdq", "xvdaa1", "sdc2", "hda", "hdd5",
        ] {
            let n = devid_from_name(name).unwrap();
            assert_eq!(name_from_devid(n).as_deref(), Some(name));
        }
        assert_eq!(name_from_devid(12345), None);
    }
}
