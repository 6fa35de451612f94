//! What every command ends with: a few lines for people (stderr), its JSON report as the last
//! line of stdout, and the process exit code (README, "Report and exit codes"). Each report type
//! says all three of itself; a command that failed says them of its error ([`Printed::failed`]).

use crate::error::Error;
use serde::Serialize;
use serde_json::{Value, json};

/// Something a command did, as it reports it to people; its JSON is its `Serialize`.
pub trait Outcome {
    /// A few lines for the operator's terminal.
    fn human(&self) -> String;
    fn exit_code(&self) -> i32;
}

/// A report as the command line prints it.
#[derive(Debug, Clone)]
pub struct Printed {
    pub human: String,
    /// The JSON report, its `exit_code` included; should encoding fail, one that says so.
    pub json: Value,
    pub exit_code: i32,
}

impl Printed {
    pub fn of<T: Outcome + Serialize>(report: &T) -> Printed {
        let exit_code = report.exit_code();
        let mut json = serde_json::to_value(report).unwrap_or_else(
            |e| json!({"status": "failed", "error": format!("cannot encode the report: {e}")}),
        );
        if let Value::Object(fields) = &mut json {
            fields.insert("exit_code".into(), exit_code.into());
        }
        Printed {
            human: report.human(),
            json,
            exit_code,
        }
    }

    /// The report of a command that ended in `error`: its status (`failed`, `invalid`,
    /// `aborted`, `locked`), exit code and message, so that a run that fails early is reported
    /// like any other.
    pub fn failed(error: &Error) -> Printed {
        let exit_code = error.exit_code();
        let message = error.to_string();
        let abort_reason = matches!(error, Error::Aborted(_)).then(|| message.clone());
        Printed {
            human: format!("blobgc: error: {message}\n"),
            json: json!({
                "status": error.status(),
                "exit_code": exit_code,
                "error": message,
                "abort_reason": abort_reason,
            }),
            exit_code,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Completed,
    Partial,
    Aborted,
}

impl Status {
    /// Completed, or partial when some work failed.
    pub fn from_errors(error_count: u64) -> Self {
        if error_count == 0 {
            Status::Completed
        } else {
            Status::Partial
        }
    }

    /// The exit code (README, "Report and exit codes").
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Completed => 0,
            Status::Aborted => 3,
            Status::Partial => 4,
        }
    }
}
