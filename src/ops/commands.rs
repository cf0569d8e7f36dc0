//! Operator commands on `…/cmd/<name>`: a JSON object, optionally with an
//! `id` the reply repeats. Each gets one reply on `…/cmd/<name>/reply`. A
//! command that is too large, not a JSON object, or unknown gets an error
//! reply and changes nothing.
//!
//! A *retained* command is refused, never run: the broker re-sends it on
//! every subscribe, so it would run again at each start and reconnect. Under
//! a flood, commands wait in a bounded queue; what does not fit is dropped
//! unread and counted by the publisher (`mqtt.inbound_dropped`), and replies
//! that cannot be sent are counted too (`mqtt.replies_dropped`): none is
//! lost without a count. Warnings about bad commands are rate-limited.

use serde_json::Value;
use std::time::{Instant, SystemTime};
use tokio::sync::mpsc;

use crate::infer::ActiveModel;
use crate::context::Context;
use crate::models::switch::SwitchError;
use crate::publish::mqtt::reply;
use crate::publish::{Inbound, Outgoing, Routes};
use crate::util::throttle::Throttle;
use crate::wire::messages::{CommandReply, PingResult};
use crate::wire::rfc3339;
use crate::wire::Topics;

/// Larger command payloads are refused (commands are small JSON objects).
pub const MAX_COMMAND_BYTES: usize = 64 << 10;
const KNOWN: &[&str] = &["ping", "rollback", "pin", "unpin"];
/// Commands waiting to be handled; more are dropped unread and counted.
const QUEUE: usize = 64;
/// Longest command name answered (no command's name is near it).
const MAX_NAME_BYTES: usize = 64;
/// Longest `id` string a reply repeats.
pub const MAX_ID_BYTES: usize = 128;

/// Why a command was refused; its Display is the reply's `error`.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("payload of {0} bytes is over the {max}-byte limit", max = MAX_COMMAND_BYTES)]
    TooLarge(usize),
    /// The broker sent it because it is retained (on subscribe), not because it was just published.
    #[error("retained commands are not run (the broker would send it again on every connect): publish it without retain, and clear the retained one (an empty retained message on the same topic)")]
    Retained,
    #[error("empty payload: nothing done (an empty message is how a retained command is cleared); send e.g. {{\"id\": \"1\"}}")]
    Empty,
    #[error("payload is not a JSON object ({}); send e.g. {{\"id\": \"1\"}}", describe(.0))]
    NotAnObject(serde_json::Error),
    #[error("`id` must be a string of at most {MAX_ID_BYTES} bytes or a number")]
    BadId,
    #[error("model commands need a [registry] section in the config")]
    NoRegistry,
    #[error("pin needs a \"version\" (a number), e.g. {{\"id\": \"1\", \"version\": 2}}")]
    NoVersion,
    #[error(transparent)]
    Switch(#[from] SwitchError),
    #[error("the command failed: {0}")]
    Panicked(tokio::task::JoinError),
    #[error("unknown command \"{0}\"; known: {known}", known = KNOWN.join(", "))]
    Unknown(String),
}

/// The parser's complaint, without quoting the payload back (it can be 64 KiB).
fn describe(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match error.classify() {
        Category::Data => "a JSON value, but not an object".to_string(),
        Category::Eof => "it ends early".to_string(),
        Category::Syntax | Category::Io => format!("invalid JSON at line {}, column {}", error.line(), error.column()),
    }
}

/// What a command's payload asks for, once read.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `version` for `pin`.
    pub version: Option<u64>,
}

/// Reads a command's payload: the request's `id` (when it can be read, even
/// for a refused command) and the request, or why it is refused.
pub fn parse(payload: &[u8], retained: bool) -> (Option<Value>, Result<Request, CommandError>) {
    if payload.len() > MAX_COMMAND_BYTES {
        return (None, Err(CommandError::TooLarge(payload.len())));
    }
    let object = serde_json::from_slice::<serde_json::Map<String, Value>>(payload);
    let valid_id = |id: &Value| id.is_number() || id.as_str().is_some_and(|s| s.len() <= MAX_ID_BYTES);
    let id = object.as_ref().ok().and_then(|o| o.get("id")).filter(|id| valid_id(id)).cloned();
    if retained {
        return (id, Err(CommandError::Retained));
    }
    if payload.is_empty() {
        return (None, Err(CommandError::Empty));
    }
    let request = match object {
        Ok(request) => request,
        Err(error) => return (None, Err(CommandError::NotAnObject(error))),
    };
    if request.get("id").is_some_and(|id| !valid_id(id)) {
        return (None, Err(CommandError::BadId));
    }
    (id, Ok(Request { version: request.get("version").and_then(Value::as_u64) }))
}

pub struct CommandTask {
    device_id: String,
    topics: Topics,
    /// The model serving now (changes with swaps).
    model: ActiveModel,
    started: Instant,
    sink: mpsc::Sender<Outgoing>,
    /// Rollback and pin; None without a `[registry]`.
    models: Option<std::sync::Arc<crate::models::switch::ModelSwitch>>,
    incoming: mpsc::Receiver<Inbound>,
    refused_log: Throttle,
}

impl CommandTask {
    /// Registers the route for `…/cmd/+`.
    pub fn new(context: &Context, models: Option<std::sync::Arc<crate::models::switch::ModelSwitch>>, routes: &mut Routes) -> CommandTask {
        let (tx, incoming) = mpsc::channel(QUEUE);
        let full_log = Throttle::for_warnings();
        routes.add_counted("commands", context.topics.commands(), move |inbound: Inbound| {
            let taken = tx.try_send(inbound).is_ok();
            if !taken {
                if let Some(suppressed) = full_log.allow() {
                    tracing::warn!(suppressed, queue = QUEUE, "commands are arriving faster than they are handled; dropped unread (counted in telemetry as mqtt.inbound_dropped)");
                }
            }
            taken
        });
        CommandTask {
            device_id: context.device_id.clone(),
            topics: context.topics.clone(),
            model: context.active_model.clone(),
            started: Instant::now(),
            sink: context.outgoing.clone(),
            models,
            incoming,
            refused_log: Throttle::for_warnings(),
        }
    }

    pub async fn run(mut self) {
        while let Some(command) = self.incoming.recv().await {
            let Some(name) = self.topics.command_name(&command.topic) else {
                tracing::debug!(topic = %command.topic, "message on an unexpected topic ignored");
                continue;
            };
            // The reply's topic repeats the name: a name no command has, as long as
            // the broker's packet limit, would make a reply the broker refuses.
            if name.len() > MAX_NAME_BYTES {
                if let Some(suppressed) = self.refused_log.allow() {
                    let shown: String = name.chars().take(64).collect();
                    tracing::warn!(bytes = name.len(), name = %shown, suppressed, "command with an over-long name ignored, without a reply");
                }
                continue;
            }
            let (id, outcome) = self.handle(name, &command.payload, command.retained).await;
            match &outcome {
                // A ping changes nothing: not worth a line each (a flood would fill the journal).
                Ok(_) if name == "ping" => tracing::debug!(command = name, "command done"),
                Ok(_) => tracing::info!(command = name, "command done"),
                Err(error) => {
                    if let Some(suppressed) = self.refused_log.allow() {
                        tracing::warn!(command = name, %error, suppressed, "command refused");
                    }
                }
            }
            let (ok, result, error) = match outcome {
                Ok(result) => (true, Some(result), None),
                Err(error) => (false, None, Some(error.to_string())),
            };
            let message = CommandReply { device: &self.device_id, command: name, id, ok, error, result, at: rfc3339(SystemTime::now()) };
            let payload = serde_json::to_vec(&message).unwrap_or_default();
            if self.sink.send(reply(self.topics.command_reply(name), payload)).await.is_err() {
                return;
            }
        }
    }

    /// The request's id and the command's result or the reason it was refused.
    async fn handle(&self, name: &str, payload: &[u8], retained: bool) -> (Option<Value>, Result<Value, CommandError>) {
        let (id, request) = match parse(payload, retained) {
            (id, Err(error)) => return (id, Err(error)),
            (id, Ok(request)) => (id, request),
        };
        let result = match name {
            "ping" => {
                let model = self.model.read().unwrap_or_else(|e| e.into_inner()).clone();
                Ok(to_value(PingResult { agent_version: crate::AGENT_VERSION, model: &model, uptime_s: self.started.elapsed().as_secs() }))
            }
            "rollback" | "pin" | "unpin" => match self.models.clone() {
                None => Err(CommandError::NoRegistry),
                Some(models) => {
                    let version = request.version;
                    let name = name.to_string();
                    // Loading a model takes a while: off the async workers.
                    tokio::task::spawn_blocking(move || match (name.as_str(), version) {
                        ("rollback", _) => Ok(to_value(models.rollback()?)),
                        ("unpin", _) => Ok(to_value(models.unpin()?)),
                        (_, Some(version)) => Ok(to_value(models.pin(version)?)),
                        (_, None) => Err(CommandError::NoVersion),
                    })
                    .await
                    .unwrap_or_else(|e| Err(CommandError::Panicked(e)))
                }
            },
            other => Err(CommandError::Unknown(other.chars().take(64).collect())),
        };
        (id, result)
    }
}

/// A reply's `result` (a typed payload from `wire`).
fn to_value(result: impl serde::Serialize) -> Value {
    serde_json::to_value(result).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_they_always_did() {
        let not_json = serde_json::from_slice::<Value>(b"x").unwrap_err();
        assert!(CommandError::NotAnObject(not_json).to_string().ends_with("; send e.g. {\"id\": \"1\"}"));
        assert_eq!(CommandError::NoVersion.to_string(), "pin needs a \"version\" (a number), e.g. {\"id\": \"1\", \"version\": 2}");
        assert_eq!(CommandError::TooLarge(70000).to_string(), "payload of 70000 bytes is over the 65536-byte limit");
        assert_eq!(CommandError::Unknown("reboot".into()).to_string(), "unknown command \"reboot\"; known: ping, rollback, pin, unpin");
    }

    #[test]
    fn a_retained_command_is_refused_with_its_id_and_what_to_do() {
        let (id, outcome) = parse(br#"{"id": "r-1"}"#, true);
        assert_eq!(id, Some(Value::from("r-1")));
        let error = outcome.unwrap_err();
        assert!(matches!(error, CommandError::Retained));
        assert!(error.to_string().contains("publish it without retain"), "{error}");
        // The same payload published live is a request.
        let (id, outcome) = parse(br#"{"id": "r-1", "version": 3}"#, false);
        assert_eq!((id, outcome.unwrap()), (Some(Value::from("r-1")), Request { version: Some(3) }));
    }

    #[test]
    fn a_bad_payload_is_not_quoted_back_in_the_reply() {
        let (_, outcome) = parse(format!("[\"{}\"]", "a".repeat(60_000)).as_bytes(), false);
        assert!(outcome.unwrap_err().to_string().len() < 200);
        assert!(matches!(parse(format!(r#"{{"id": "{}"}}"#, "i".repeat(MAX_ID_BYTES + 1)).as_bytes(), false).1, Err(CommandError::BadId)));
    }

    proptest::proptest! {
        /// Whatever arrives, the parser does not panic, an `id` it returns is
        /// one a reply may repeat, and its error text stays short.
        #[test]
        fn any_payload_parses_within_bounds(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..512), retained: bool) {
            let _ = check(&payload, retained);
        }

        #[test]
        fn any_json_object_parses_within_bounds(
            id in proptest::option::of(proptest::prop_oneof![
                proptest::strategy::Just(Value::Null),
                proptest::num::i64::ANY.prop_map(Value::from),
                ".{0,200}".prop_map(Value::from),
                proptest::collection::vec(proptest::num::u8::ANY, 0..4).prop_map(|v| Value::from(v)),
            ]),
            version in proptest::option::of(proptest::num::i64::ANY),
            retained: bool,
        ) {
            let mut object = serde_json::Map::new();
            if let Some(id) = id { object.insert("id".into(), id); }
            if let Some(version) = version { object.insert("version".into(), Value::from(version)); }
            let payload = serde_json::to_vec(&object).unwrap();
            let (id, outcome) = check(&payload, retained);
            if retained {
                proptest::prop_assert!(matches!(outcome, Err(CommandError::Retained)));
            } else if let Ok(request) = outcome {
                proptest::prop_assert_eq!(request.version, object.get("version").and_then(Value::as_u64));
                proptest::prop_assert_eq!(id.as_ref(), object.get("id"));
            }
        }
    }

    use proptest::strategy::Strategy;

    fn check(payload: &[u8], retained: bool) -> (Option<Value>, Result<Request, CommandError>) {
        let (id, outcome) = parse(payload, retained);
        if let Some(id) = &id {
            assert!(id.is_number() || id.as_str().is_some_and(|s| s.len() <= MAX_ID_BYTES), "{id}");
        }
        if let Err(error) = &outcome {
            assert!(error.to_string().len() <= 400, "{error}");
        }
        if retained {
            assert!(matches!(outcome, Err(CommandError::Retained) | Err(CommandError::TooLarge(_))));
        }
        (id, outcome)
    }
}
