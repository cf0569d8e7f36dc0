//! Model releases, from the trainer to the frame path: the signed record
//! ([`release`]), the OCI registry client ([`registry`]), the trainer's side
//! ([`trainer`]), the device's updater threads ([`updater`], one per kind of
//! model, each with what its kind needs: [`target`]), installed releases on
//! disk ([`store`]), operator choices ([`switch`]), and what a new
//! classifier release must show on its first frames ([`probation`]).

pub mod probation;
pub mod recorder;
pub mod registry;
pub mod release;
pub mod store;
pub mod switch;
pub mod target;
pub mod trainer;
pub mod updater;
