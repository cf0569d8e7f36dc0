//! The installer's view: what the agent sees, drawn ([`draw`]); one
//! annotated picture of a camera without any network ([`snapshot`]).

pub mod draw;
pub mod snapshot;
