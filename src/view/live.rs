//! The live page's side of the frame path. [`LiveTap`] takes a copy of at
//! most one frame per `min_gap` per camera and hands it over with
//! `try_send` (a busy encoder costs a skipped picture, never a late frame);
//! the view-encoder thread draws on it and encodes it into the hub.
//! [`VehicleCounter`] counts each vehicle reported, for the page's table.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opencv::prelude::*;

use super::draw;
use super::hub::ViewHub;
use crate::config::CameraConfig;
use crate::pipeline::vehicles::{Seen, VehicleTap};
use crate::pipeline::view::{FrameView, OwnedView, ViewTap};

/// Page pictures are for a person: quality 80 is plenty and keeps them small.
const JPEG_QUALITY: i32 = 80;

pub struct LiveTap {
    min_gap: Duration,
    /// Per camera: when a frame was last taken.
    last: Vec<Option<Instant>>,
    encoder: SyncSender<OwnedView>,
}

impl LiveTap {
    /// Starts the encoder thread; it ends when the tap is dropped.
    pub fn start(hub: Arc<ViewHub>, cameras: Vec<CameraConfig>, min_gap: Duration) -> std::io::Result<LiveTap> {
        // One waiting: the newest a busy encoder will take next.
        let (encoder, frames) = sync_channel::<OwnedView>(1);
        let count = cameras.len();
        std::thread::Builder::new().name("view-encoder".into()).spawn(move || {
            for taken in frames {
                let camera = &cameras[taken.camera];
                let view = taken.view(&camera.id);
                match draw::annotate(&view, camera).and_then(|image| draw::jpeg(&image, JPEG_QUALITY)) {
                    Ok(jpeg) => hub.offer_frame(&camera.id, jpeg, taken.frame.cols().max(0) as u32, taken.frame.rows().max(0) as u32, taken.frame_index),
                    Err(error) => tracing::warn!(camera = %camera.id, %error, "cannot draw the page's picture; the pipeline goes on"),
                }
            }
        })?;
        Ok(LiveTap { min_gap, last: vec![None; count], encoder })
    }
}

impl ViewTap for LiveTap {
    fn wants(&mut self, camera: usize, _frame_index: u64, _clock_s: f64) -> bool {
        self.last.get(camera).is_some_and(|last| last.is_none_or(|at| at.elapsed() >= self.min_gap))
    }

    fn show(&mut self, view: &FrameView<'_>) {
        // Taken or skipped, the camera's next turn is a gap away.
        self.last[view.camera] = Some(Instant::now());
        let Ok(taken) = view.to_owned() else { return };
        match self.encoder.try_send(taken) {
            Ok(()) | Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => tracing::debug!("the view encoder stopped"),
        }
    }
}

/// Counts every vehicle reported, per camera, lane and class.
pub struct VehicleCounter {
    pub hub: Arc<ViewHub>,
}

impl VehicleTap for VehicleCounter {
    fn vehicle(&mut self, vehicle: &Seen<'_>) {
        let m = vehicle.message;
        self.hub.count_vehicle(&m.camera, m.lane.as_deref(), &m.class);
    }
}
