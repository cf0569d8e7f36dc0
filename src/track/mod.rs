//! Vehicles, not frames: per camera, a tracker follows the regions of every
//! processed frame from one frame to the next ([`tracker`], on a
//! constant-velocity Kalman filter, [`kalman`]), so that each vehicle is
//! classified by the consensus of its frames ([`vote`]), placed in a lane
//! and across lines ([`geometry`]), given a speed when the camera is
//! calibrated, and counted per interval ([`counts`]). Track ids are unique
//! per device across restarts ([`ids`]).
//!
//! Pure logic: no OpenCV, no MQTT. The inference thread
//! (`pipeline::vehicles`) drives it.

pub mod geometry;
pub mod kalman;
pub mod metrics;
pub mod tracker;
