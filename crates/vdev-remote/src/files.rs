//! Files on the host: read whole, and replaced whole (written aside, then renamed over), as
//! the drivers' stored documents are (libxl's userdata). On this machine directly, on a
//! blocking thread: starting a shell would cost more than the work (in a PV Domain-0 under TCG
//! each process start costs 0.1-0.3 s); on a remote host one round trip of the agent each.

use std::time::Duration;

use crate::host::{sh_quote, Host, RunOutput};

impl Host {
    /// The bytes of the file at `path` on the host, or `None` when nothing is there (one round
    /// trip on a remote host; read directly on this machine, where starting a shell would cost
    /// more than the read). The outer error is the transport's, the inner one the file's.
    pub async fn read_file(
        &self,
        path: &str,
        timeout: Duration,
    ) -> vdev_core::Result<std::io::Result<Option<Vec<u8>>>> {
        match self {
            Host::Local => {
                let path = path.to_owned();
                blocking(move || read_local(&path)).await
            }
            Host::Ssh(_) => {
                let out = self.run(&read_script(path), timeout).await?;
                Ok(read_answer(&out, self))
            }
        }
    }
}

/// `F` and the file's bytes, or `N` when nothing is at `path`.
pub(crate) fn read_script(path: &str) -> String {
    format!(
        "if [ -e {p} ]; then printf F; cat -- {p}; else printf N; fi",
        p = sh_quote(path)
    )
}

/// [`read_script`]'s answer.
pub(crate) fn read_answer(out: &RunOutput, host: &Host) -> std::io::Result<Option<Vec<u8>>> {
    if !out.success() {
        return Err(std::io::Error::other(out.stderr.trim().to_owned()));
    }
    match out.stdout.split_first() {
        Some((b'F', rest)) => Ok(Some(rest.to_vec())),
        Some((b'N', _)) => Ok(None),
        _ => Err(std::io::Error::other(format!(
            "unexpected answer from {}: {:?}",
            host.name(),
            String::from_utf8_lossy(&out.stdout)
        ))),
    }
}

pub(crate) fn read_local(path: &str) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Host {
    /// Replace the file at `path` on the host with `bytes`: written to `temp` (created with mode
    /// 0600, or truncated), then renamed over `path`, so that a reader sees the old file or the
    /// new one, never a part. One round trip on a remote host, where `bytes` must be UTF-8
    /// text apart from NUL bytes (it travels as quoted shell words). The outer error is the
    /// transport's, the inner one the files'.
    pub async fn replace_file(
        &self,
        temp: &str,
        path: &str,
        bytes: &[u8],
        timeout: Duration,
    ) -> vdev_core::Result<std::io::Result<()>> {
        match self {
            Host::Local => {
                let (temp, path, bytes) = (temp.to_owned(), path.to_owned(), bytes.to_vec());
                blocking(move || replace_local(&temp, &path, &bytes)).await
            }
            Host::Ssh(_) => {
                let script = match replace_script(temp, path, bytes) {
                    Ok(s) => s,
                    Err(e) => return Ok(Err(e)),
                };
                let out = self.run(&script, timeout).await?;
                Ok(if out.success() {
                    Ok(())
                } else {
                    Err(std::io::Error::other(format!(
                        "on {}: {}",
                        self.name(),
                        out.stderr.trim()
                    )))
                })
            }
        }
    }
}

/// `f` on tokio's blocking threads; a panic there is an error of the file.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> vdev_core::Result<std::io::Result<T>> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()))))
}

/// The shell script of [`Host::replace_file`]: `bytes` split at its NUL bytes, each part a
/// quoted `printf` argument, a NUL printed between them.
fn replace_script(temp: &str, path: &str, bytes: &[u8]) -> std::io::Result<String> {
    let mut format = String::new();
    let mut args = String::new();
    for (i, part) in bytes.split(|b| *b == 0).enumerate() {
        if i > 0 {
            format.push_str("\\000");
        }
        format.push_str("%s");
        let part = std::str::from_utf8(part).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{path}: not text, which a remote host's file cannot be sent as: {e}"),
            )
        })?;
        args.push(' ');
        args.push_str(&sh_quote(part));
    }
    Ok(format!(
        "umask 077; printf '{format}'{args} >{t} && mv -f -- {t} {d}",
        t = sh_quote(temp),
        d = sh_quote(path)
    ))
}

fn replace_local(temp: &str, path: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(temp)?;
    f.write_all(bytes)?;
    drop(f);
    std::fs::rename(temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same bytes, NULs included, written locally and through the shell script.
    #[tokio::test]
    async fn a_file_is_replaced_whole_here_and_by_the_script() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vdev-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (temp, path) = (dir.join("new"), dir.join("doc"));
        let (temp, path) = (temp.to_str().unwrap(), path.to_str().unwrap());
        let bytes = b"{\"a\": \"it's %s \\\\000\"}\n\0tail\0";
        Host::Local
            .replace_file(temp, path, bytes, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::read(path).unwrap(), bytes);
        std::fs::remove_file(path).unwrap();
        let out = Host::Local
            .run(
                &replace_script(temp, path, bytes).unwrap(),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert!(out.success(), "{}", out.stderr);
        assert_eq!(std::fs::read(path).unwrap(), bytes);
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!std::path::Path::new(temp).exists());
        assert_eq!(
            Host::Local
                .read_file(path, Duration::from_secs(5))
                .await
                .unwrap()
                .unwrap(),
            Some(bytes.to_vec())
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            Host::Local
                .read_file(path, Duration::from_secs(5))
                .await
                .unwrap()
                .unwrap(),
            None
        );
        assert!(replace_script(temp, path, b"\xff").is_err());
    }
}
