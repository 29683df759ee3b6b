//! The projections' one error type: what failed, with what it was doing.

use certledger_eventlog::StorageError;

/// A failure of the read models, their projector or their queries.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// A read-model database failure, with what was being done
    /// (e.g. `project batch ending at position 42: upsert inventory row cert-1`).
    #[error("read models: {context}: {source}")]
    Database {
        /// What was being done.
        context: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// Reading the event log failed.
    #[error("reading the event log: {0}")]
    Log(#[from] StorageError),
    /// The log and the read models disagree in a way a retry may fix (e.g. a stream that
    /// is shorter than an event delivered from it).
    #[error("inconsistent: {0}")]
    Inconsistent(String),
    /// A request's parameter is invalid (names the parameter).
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The parameter.
        field: String,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// The consumer feeding the projector failed.
    #[error(transparent)]
    Consumer(#[from] certledger_eventstream::consumer::ConsumerError),
}

impl ProjectionError {
    /// A database error with context.
    pub fn db(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> ProjectionError {
        let context = context.into();
        move |source| ProjectionError::Database { context, source }
    }

    /// An invalid request parameter.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ProjectionError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Whether retrying the same operation may succeed (database or log trouble).
    pub fn is_transient(&self) -> bool {
        !matches!(self, ProjectionError::InvalidArgument { .. })
    }
}
