//! Operator commands on `…/cmd/<name>`: a JSON object, optionally with an
//! `id` the reply repeats. Each gets one reply on `…/cmd/<name>/reply`. A
//! command that is too large, not a JSON object, or unknown gets an error
//! reply and changes nothing.

use serde_json::Value;
use std::time::{Instant, SystemTime};
use tokio::sync::mpsc;

use crate::infer::ActiveModel;
use crate::context::Context;
use crate::models::switch::SwitchError;
use crate::publish::mqtt::reply;
use crate::publish::{Inbound, Outgoing, Routes};
use crate::wire::messages::{CommandReply, PingResult};
use crate::wire::rfc3339;
use crate::wire::Topics;

/// Larger command payloads are refused (commands are small JSON objects).
pub const MAX_COMMAND_BYTES: usize = 64 << 10;
const KNOWN: &[&str] = &["ping", "rollback", "pin", "unpin"];
/// Commands waiting to be handled; more are refused with a log line.
const QUEUE: usize = 16;

/// Why a command was refused; its Display is the reply's `error`.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    #[error("payload of {0} bytes is over the {max}-byte limit", max = MAX_COMMAND_BYTES)]
    TooLarge(usize),
    #[error("payload is not a JSON object ({0}); send e.g. {{\"id\": \"1\"}}")]
    NotAnObject(serde_json::Error),
    #[error("`id` must be a string or a number")]
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
}

impl CommandTask {
    /// Registers the route for `…/cmd/+`.
    pub fn new(context: &Context, models: Option<std::sync::Arc<crate::models::switch::ModelSwitch>>, routes: &mut Routes) -> CommandTask {
        let (tx, incoming) = mpsc::channel(QUEUE);
        routes.add("commands", context.topics.commands(), move |inbound: Inbound| {
            if tx.try_send(inbound).is_err() {
                tracing::warn!("commands are arriving faster than they are handled; one was ignored");
            }
        });
        CommandTask {
            device_id: context.device_id.clone(),
            topics: context.topics.clone(),
            model: context.active_model.clone(),
            started: Instant::now(),
            sink: context.outgoing.clone(),
            models,
            incoming,
        }
    }

    pub async fn run(mut self) {
        while let Some(command) = self.incoming.recv().await {
            let Some(name) = self.topics.command_name(&command.topic) else {
                tracing::debug!(topic = %command.topic, "message on an unexpected topic ignored");
                continue;
            };
            let (id, outcome) = self.handle(name, &command.payload).await;
            match &outcome {
                Ok(_) => tracing::info!(command = name, "command done"),
                Err(error) => tracing::warn!(command = name, %error, "command refused"),
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
    async fn handle(&self, name: &str, payload: &[u8]) -> (Option<Value>, Result<Value, CommandError>) {
        if payload.len() > MAX_COMMAND_BYTES {
            return (None, Err(CommandError::TooLarge(payload.len())));
        }
        let request: serde_json::Map<String, Value> = match serde_json::from_slice(payload) {
            Ok(request) => request,
            Err(error) => return (None, Err(CommandError::NotAnObject(error))),
        };
        let id = request.get("id").cloned();
        if let Some(id) = &id {
            if !(id.is_string() || id.is_number()) {
                return (None, Err(CommandError::BadId));
            }
        }
        let result = match name {
            "ping" => {
                let model = self.model.read().unwrap_or_else(|e| e.into_inner()).clone();
                Ok(to_value(PingResult { agent_version: crate::AGENT_VERSION, model: &model, uptime_s: self.started.elapsed().as_secs() }))
            }
            "rollback" | "pin" | "unpin" => match self.models.clone() {
                None => Err(CommandError::NoRegistry),
                Some(models) => {
                    let version = request.get("version").and_then(Value::as_u64);
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
            other => Err(CommandError::Unknown(other.to_string())),
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
}
