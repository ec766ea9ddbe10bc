//! The kernel's xenbus device as a byte stream to xenstored.

use tokio::io::{AsyncRead, AsyncWrite};

/// The xenbus device (`/dev/xen/xenbus`), opened non-blocking: reads through tokio's reactor,
/// writes made directly, because the device never
/// reports itself writable to poll (it accepts every complete message at once).
pub(super) struct XenbusDevice(tokio::io::unix::AsyncFd<std::fs::File>);

impl XenbusDevice {
    pub(super) fn open(path: &std::path::Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        // SAFETY: the File is owned by the AsyncFd for all its life and never handed out, so its
        // descriptor stays open and the same until the AsyncFd is dropped.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(f) }.map_err(|e| e.into_parts().1)?;
        Ok(XenbusDevice(fd))
    }
}

impl AsyncRead for XenbusDevice {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::io::Read;
        loop {
            let mut ready = std::task::ready!(self.0.poll_read_ready(cx))?;
            match ready.try_io(|f| f.get_ref().read(buf.initialize_unfilled())) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return std::task::Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for XenbusDevice {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::io::Write;
        loop {
            match self.0.get_ref().write(buf) {
                // The device cannot say when it will take the message (it never reports itself
                // writable): yield to the executor and try again on the next poll, instead of
                // spinning on the worker thread. The caller's request timeout bounds the wait.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    cx.waker().wake_by_ref();
                    return std::task::Poll::Pending;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return std::task::Poll::Ready(r),
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
