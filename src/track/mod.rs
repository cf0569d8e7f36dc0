//! Vehicles, not frames: per camera, a tracker follows the regions of every
//! processed frame from one frame to the next ([`tracker`], on a
//! constant-velocity Kalman filter, [`kalman`]); the [`scene`] keeps, per
//! track, what its vehicle message will say: the consensus of its frames'
//! classes ([`vote`]), its lane and line crossings and, on a calibrated
//! camera, its speed ([`geometry`], `util::plane`). Vehicles are counted per
//! interval ([`counts`]); track ids are unique per device across restarts
//! ([`ids`]); the interval in progress is kept on disk for a crash ([`journal`]). [`metrics`] scores a tracker against truth (CLEAR-MOT) for the tests.
//!
//! Pure logic: no OpenCV, no MQTT. The inference thread
//! (`pipeline::vehicles`) drives it.

pub mod counts;
pub mod geometry;
pub mod ids;
pub mod journal;
pub mod kalman;
pub mod metrics;
pub mod scene;
pub mod tracker;
pub mod vote;
