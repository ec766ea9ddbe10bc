//! XenStore transactions: start and end, and a body run again from the start while
//! xenstored answers EAGAIN, with back-off and a bound on open transactions.

use std::time::Duration;

use vdev_core::{Error, Result};

use super::wire::{utf8, Op, Req};
use super::{TxId, XenStore, NO_TX};
use crate::error::XsError;

/// xenstored allows a connection 10 open transactions by default; stay below that.
pub(super) const MAX_TRANSACTIONS: usize = 6;
/// How often a transaction that xenstored answered EAGAIN is tried again.
const MAX_TX_ATTEMPTS: usize = 200;

/// How a transaction failed.
pub(crate) enum TxFailure<T> {
    /// Nothing was committed.
    Failed(Error),
    /// The commit was sent and its answer never came (no answer in time, or the connection was
    /// lost): it may have landed. With the body's value.
    Unknown(Error, T),
}

/// Which way a transaction body ended.
pub(crate) enum Body<T> {
    /// Commit and return the value.
    Commit(T),
    /// Abort (nothing written) and return this error.
    Abort(Error),
    /// Abort and run the body again: what it read was inconsistent because another
    /// transaction committed meanwhile (C xenstored's reads inside a transaction are not a
    /// snapshot; a conflict is otherwise only seen at commit).
    Retry,
}

impl XenStore {
    /// Start a transaction (on the current connection, opened again if lost).
    pub(crate) async fn transaction_start(&self) -> std::result::Result<TxId, XsError> {
        let s = self.session().await?;
        let req = Req::new(Op::TransactionStart, &[b""], false);
        let rx = s.send(NO_TX, &req)?;
        let b = s.wait(&req, rx).await?;
        let id: u32 = utf8(b)
            .trim_end_matches('\0')
            .parse()
            .map_err(|_| XsError::Protocol("TRANSACTION_START answered no id".into()))?;
        Ok(((s.generation as u64) << 32) | id as u64)
    }

    /// End a transaction. `Ok(false)` when xenstored answered EAGAIN (retry the whole thing).
    pub(crate) async fn transaction_end(
        &self,
        tx: TxId,
        commit: bool,
    ) -> std::result::Result<bool, XsError> {
        let flag: &[u8] = if commit { b"T" } else { b"F" };
        match self
            .request(tx, Req::new(Op::TransactionEnd, &[flag], true))
            .await
        {
            Ok(_) => Ok(true),
            Err(XsError::Errno(e)) if e == "EAGAIN" => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Run `body` in a XenStore transaction, again from the start while xenstored answers EAGAIN.
    pub(crate) async fn transaction<T, F, Fut>(&self, what: &str, body: F) -> Result<T>
    where
        F: Fn(TxId) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<Body<T>, XsError>>,
    {
        self.transaction_outcome(what, body)
            .await
            .map_err(|f| match f {
                TxFailure::Failed(e) | TxFailure::Unknown(e, _) => e,
            })
    }

    /// [`Self::transaction`], telling a failure from a commit whose outcome is unknown.
    pub(crate) async fn transaction_outcome<T, F, Fut>(
        &self,
        what: &str,
        body: F,
    ) -> std::result::Result<T, TxFailure<T>>
    where
        F: Fn(TxId) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<Body<T>, XsError>>,
    {
        let failed = |e: XsError| TxFailure::Failed(e.into_core(what));
        let _slot = self.tx_slots.acquire().await.expect("never closed");
        for attempt in 0..MAX_TX_ATTEMPTS {
            let tx = self.transaction_start().await.map_err(failed)?;
            let res = body(tx).await;
            match res {
                Err(e) => {
                    let _ = self.transaction_end(tx, false).await;
                    if matches!(&e, XsError::Errno(n) if n == "EAGAIN") {
                        backoff(attempt).await;
                        continue;
                    }
                    return Err(failed(e));
                }
                Ok(Body::Abort(e)) => {
                    let _ = self.transaction_end(tx, false).await;
                    return Err(TxFailure::Failed(e));
                }
                Ok(Body::Retry) => {
                    let _ = self.transaction_end(tx, false).await;
                    backoff(attempt).await;
                }
                Ok(Body::Commit(v)) => match self.transaction_end(tx, true).await {
                    Ok(true) => return Ok(v),
                    Ok(false) => backoff(attempt).await,
                    Err(
                        e @ (XsError::Timeout { .. }
                        | XsError::Disconnected(_)
                        | XsError::Remote { .. }),
                    ) => return Err(TxFailure::Unknown(e.into_core(what), v)),
                    Err(e) => return Err(failed(e)),
                },
            }
        }
        Err(TxFailure::Failed(Error::backend(
            crate::NAME,
            format!("{what}: xenstored kept answering EAGAIN (conflicting transactions) {MAX_TX_ATTEMPTS} times"),
        )))
    }
}

async fn backoff(attempt: usize) {
    // A little jitter so that conflicting writers do not meet again at once.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let ms = 2 + (nanos as usize % 8) + attempt.min(20);
    tokio::time::sleep(Duration::from_millis(ms as u64)).await;
}
