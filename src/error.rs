//! Errors, and the exit code each kind of error maps to (README, "Report and exit codes").

use std::fmt;

/// What went wrong, classified by what the operator must do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or job file is invalid: fix the configuration (exit 2).
    #[error("invalid configuration: {0}")]
    Usage(String),
    /// A safety check refused to go on; nothing was deleted (exit 3).
    #[error("aborted by a safety check, nothing deleted: {0}")]
    Aborted(String),
    /// Reading, planning or deleting failed at run time (exit 1).
    #[error("{0}")]
    Runtime(String),
    /// Another run holds the store's lease: nothing was done, retry later (exit 5).
    #[error("locked, retry later: {0}")]
    Locked(String),
}

impl Error {
    /// The process exit code of this error (README, "Report and exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Runtime(_) => 1,
            Error::Usage(_) => 2,
            Error::Aborted(_) => 3,
            Error::Locked(_) => 5,
        }
    }

    /// The report's `status` of a command that ended in this error.
    pub fn status(&self) -> &'static str {
        match self {
            Error::Runtime(_) => "failed",
            Error::Usage(_) => "invalid",
            Error::Aborted(_) => "aborted",
            Error::Locked(_) => "locked",
        }
    }

    pub fn usage(msg: impl fmt::Display) -> Self {
        Error::Usage(msg.to_string())
    }

    pub fn aborted(msg: impl fmt::Display) -> Self {
        Error::Aborted(msg.to_string())
    }

    pub fn runtime(msg: impl fmt::Display) -> Self {
        Error::Runtime(msg.to_string())
    }

    /// Prefixes the message with where it happened, keeping the kind (and so the exit code).
    pub fn context(self, what: impl fmt::Display) -> Self {
        match self {
            Error::Usage(m) => Error::Usage(format!("{what}: {m}")),
            Error::Aborted(m) => Error::Aborted(format!("{what}: {m}")),
            Error::Runtime(m) => Error::Runtime(format!("{what}: {m}")),
            Error::Locked(m) => Error::Locked(format!("{what}: {m}")),
        }
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Error::Runtime(e.to_string())
    }
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        Error::Runtime(e.to_string())
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Error::Runtime(e.to_string())
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Runtime(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
