//! What operators see and say: periodic [`telemetry`] (with [`sensors`]),
//! [`commands`] on `…/cmd/+`, the console [`watch`], and systemd's
//! READY/WATCHDOG protocol ([`notify`]).

pub mod commands;
pub mod notify;
pub mod sensors;
pub mod telemetry;
pub mod watch;
