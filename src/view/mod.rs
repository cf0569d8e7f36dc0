//! The installer's view: what the agent sees, drawn ([`draw`]); one
//! annotated picture of a camera without any network ([`snapshot`]); the
//! local page ([`server`]) fed through the [`hub`] by the frame path's
//! taps ([`live`]).

pub mod connections;
pub mod draw;
pub mod hub;
pub mod live;
pub mod server;
pub mod snapshot;
