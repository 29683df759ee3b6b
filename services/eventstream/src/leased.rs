//! A reader of the log (a SQL-tail consumer, the relay) works only while it holds its
//! lease on the log ([`EventLog::lease`]): of the processes that run it, one works and
//! the others wait to take over.

use std::future::Future;

use certledger_eventlog::{EventLog, StorageError};
use tokio_util::sync::CancellationToken;

pub(crate) enum Leased<T> {
    /// The work finished while the lease was held.
    Done(T),
    /// The lease was lost; the work was dropped where it was.
    Lost,
    /// The lease could not be taken (the log's database failed).
    Failed(StorageError),
    /// Shutdown came while waiting for the lease.
    Shutdown,
}

/// Waits for the lease `name` on `log`, then runs `work` while it is held.
pub(crate) async fn while_leased<T>(
    log: &dyn EventLog,
    name: &str,
    shutdown: &CancellationToken,
    work: impl Future<Output = T>,
) -> Leased<T> {
    let lease = tokio::select! {
        lease = log.lease(name) => lease,
        () = shutdown.cancelled() => return Leased::Shutdown,
    };
    let mut lease = match lease {
        Ok(lease) => lease,
        Err(error) => return Leased::Failed(error),
    };
    tokio::select! {
        done = work => Leased::Done(done),
        () = lease.lost() => Leased::Lost,
    }
}
