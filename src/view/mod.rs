//! The installer's local page: what the agent sees (annotated frames per camera), its counts and its model, over HTTP.

pub mod hub;
pub mod server;
