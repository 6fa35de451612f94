//! What every command ends with: a few lines for people (stderr), its JSON report as the last
//! line of stdout, and the process exit code (README, "Report and exit codes"). Each report type
//! says all three of itself.

use serde::Serialize;

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
    /// The JSON report, one line; should encoding fail, a line that says so.
    pub json: String,
    pub exit_code: i32,
}

impl Printed {
    pub fn of<T: Outcome + Serialize>(report: &T) -> Printed {
        Printed {
            human: report.human(),
            json: serde_json::to_string(report)
                .unwrap_or_else(|e| format!("{{\"status\":\"error\",\"error\":\"{e}\"}}")),
            exit_code: report.exit_code(),
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
