//! What every command ends with: a few lines for people (stderr), its JSON report as the last
//! line of stdout, and the process exit code (README, "Report and exit codes"). Each report type
//! says all three of itself.

use serde::Serialize;

/// Something a command did, as it reports it.
pub trait Outcome {
    /// A few lines for the operator's terminal.
    fn human(&self) -> String;
    /// The JSON report, one line.
    fn json(&self) -> String;
    fn exit_code(&self) -> i32;
}

/// `report` as one line of JSON; should encoding fail, a line that says so.
pub fn json_line<T: Serialize>(report: &T) -> String {
    serde_json::to_string(report)
        .unwrap_or_else(|e| format!("{{\"status\":\"error\",\"error\":\"{e}\"}}"))
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
