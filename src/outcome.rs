//! How a command ends for a script: its exit status, and under `--json` its error as a
//! JSON document, so that "the switch refused" and "no switch to ask" are told apart
//! without reading messages.

use std::process::ExitCode;

use serde::Serialize;
use tapswitch::control::{ControlError, ErrorKind};

/// Exit status of a command that failed for a reason not named below (a bad file, a
/// local check, the demo, doctor's error findings).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status of a command line clap rejects (its own convention: named here for the
/// help text and its test).
#[cfg_attr(not(test), allow(dead_code))]
pub const EXIT_USAGE: u8 = 2;
/// Exit status when the switch answered and refused the request (`code` says why).
pub const EXIT_REFUSED: u8 = 3;
/// Exit status when the switch cannot be reached: no socket, nobody listening, no
/// permission on it, or the connection lost (also a switch that stops under `events`).
pub const EXIT_UNREACHABLE: u8 = 4;

/// The exit statuses, for `--help` and the README.
pub const EXIT_STATUS_HELP: &str = "Exit status: 0 success; 1 failure (bad input, a local check, \
doctor's errors); 2 usage error; 3 the switch refused the request (`code` in --json says \
why); 4 the switch cannot be reached (no socket, nobody listening, connection lost, or it \
stopped while `events` was streaming).";

/// What kind of failure, as a script sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    Failed,
    /// Refused by the switch with this code.
    Refused(ErrorKind),
    Unreachable,
}

/// A failed command: its kind and the message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CliError {
    pub kind: FailureKind,
    pub message: String,
}

impl CliError {
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Unreachable,
            message: message.into(),
        }
    }

    /// The process exit status for this failure.
    pub fn exit_status(&self) -> u8 {
        match self.kind {
            FailureKind::Failed => EXIT_FAILURE,
            FailureKind::Refused(_) => EXIT_REFUSED,
            FailureKind::Unreachable => EXIT_UNREACHABLE,
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.exit_status())
    }

    /// The error as `--json` prints it: `{"error": …, "code": …}`, `code` being the
    /// switch's for a refusal, `unreachable` or `failed` otherwise.
    pub fn to_json(&self) -> JsonError<'_> {
        let code = match self.kind {
            FailureKind::Failed => JsonCode::Failed,
            FailureKind::Refused(kind) => JsonCode::Refused(kind),
            FailureKind::Unreachable => JsonCode::Unreachable,
        };
        JsonError {
            error: &self.message,
            code,
            exit_status: self.exit_status(),
        }
    }
}

/// A failed command under `--json`.
#[derive(Debug, Serialize)]
pub struct JsonError<'a> {
    pub error: &'a str,
    pub code: JsonCode,
    pub exit_status: u8,
}

/// The `code` of a failed command under `--json`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum JsonCode {
    Refused(ErrorKind),
    #[serde(serialize_with = "unreachable_code")]
    Unreachable,
    #[serde(serialize_with = "failed_code")]
    Failed,
}

fn unreachable_code<S: serde::Serializer>(serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str("unreachable")
}

fn failed_code<S: serde::Serializer>(serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str("failed")
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        Self {
            kind: FailureKind::Failed,
            message,
        }
    }
}

impl From<ControlError> for CliError {
    fn from(error: ControlError) -> Self {
        let kind = match &error {
            ControlError::Refused(refusal) => FailureKind::Refused(refusal.kind),
            ControlError::Socket { .. } => FailureKind::Unreachable,
            _ => FailureKind::Failed,
        };
        Self {
            kind,
            message: error.to_string(),
        }
    }
}

/// Compact JSON (one line), or indented with `pretty`, as iproute2's `-j` and `-j -p`.
pub fn json_text<T: Serialize + ?Sized>(value: &T, pretty: bool) -> Result<String, CliError> {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    text.map(|text| format!("{text}\n"))
        .map_err(|e| CliError::from(format!("the reply does not serialise as JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapswitch::control::RequestError;

    #[test]
    fn refusals_and_unreachable_switches_exit_differently_and_say_so_in_json() {
        let refused = CliError::from(ControlError::Refused(RequestError::not_found(
            "no port named \"x\"",
        )));
        assert_eq!(refused.exit_status(), EXIT_REFUSED);
        let json = serde_json::to_value(refused.to_json()).unwrap();
        assert_eq!(json["code"], "not_found");
        assert_eq!(json["exit_status"], 3);

        let gone = CliError::from(ControlError::Socket {
            path: "/nonexistent".into(),
            step: "connect",
            source: std::io::ErrorKind::NotFound.into(),
        });
        assert_eq!(gone.exit_status(), EXIT_UNREACHABLE);
        let json = serde_json::to_value(gone.to_json()).unwrap();
        assert_eq!(json["code"], "unreachable");

        let local = CliError::from("bad file".to_owned());
        assert_eq!(local.exit_status(), EXIT_FAILURE);
        assert_eq!(
            serde_json::to_value(local.to_json()).unwrap()["code"],
            "failed"
        );
        let codes = [EXIT_FAILURE, EXIT_USAGE, EXIT_REFUSED, EXIT_UNREACHABLE];
        for code in codes {
            assert!(EXIT_STATUS_HELP.contains(&format!("{code} ")), "{code}");
        }
    }

    #[test]
    fn json_is_compact_unless_pretty() {
        let value = serde_json::json!({"a": [1, 2]});
        assert_eq!(json_text(&value, false).unwrap(), "{\"a\":[1,2]}\n");
        assert!(json_text(&value, true).unwrap().contains("\n  \"a\""));
    }
}
