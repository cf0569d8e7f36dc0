//! The frame path: a thread per camera decodes frames ([`camera`]) and finds
//! the regions to classify ([`regions`]), the [`frame_queue`] hands them to
//! the inference thread ([`inference`]), which classifies them and hands the
//! result on; on detector cameras it first runs the detector when it is due
//! ([`detection`]), on tracked ones it follows the vehicles ([`vehicles`]).
//! [`stats`] are the counters the path shares with telemetry; [`view`] is
//! what the installer's view is shown of a frame.

pub mod camera;
pub mod detection;
pub mod frame_queue;
pub mod inference;
pub mod regions;
pub mod stats;
pub mod vehicles;
pub mod view;
