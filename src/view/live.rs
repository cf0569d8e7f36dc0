//! The live page's side of the frame path. [`LiveTap`] takes a copy of at
//! most `max_fps` frames a second per camera and hands it over with
//! `try_send` (a busy encoder costs a skipped picture, never a late frame);
//! the view-encoder thread draws on it and encodes it into the hub.
//! [`VehicleCounter`] counts each vehicle reported, for the page's table.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opencv::core::{Mat, Rect};
use opencv::prelude::*;

use super::draw;
use super::hub::ViewHub;
use crate::config::CameraConfig;
use crate::infer::RegionPrediction;
use crate::pipeline::vehicles::{Seen, VehicleTap};
use crate::pipeline::view::{FrameView, ShownTrack, ViewTap};

/// A frame taken for the page, owned, on its way to the encoder.
struct Taken {
    camera: usize,
    frame: Mat,
    frame_index: u64,
    clock_s: f64,
    regions: Vec<Rect>,
    classified: Vec<RegionPrediction>,
    tracks: Vec<ShownTrack>,
}

/// Page pictures are for a person: quality 80 is plenty and keeps them small.
const JPEG_QUALITY: i32 = 80;

pub struct LiveTap {
    min_gap: Duration,
    /// Per camera: when a frame was last taken.
    last: Vec<Option<Instant>>,
    encoder: SyncSender<Taken>,
}

impl LiveTap {
    /// Starts the encoder thread; it ends when the tap is dropped.
    pub fn start(hub: Arc<ViewHub>, cameras: Vec<CameraConfig>, max_fps: f64) -> std::io::Result<LiveTap> {
        // One waiting: the newest a busy encoder will take next.
        let (encoder, frames) = sync_channel::<Taken>(1);
        let count = cameras.len();
        std::thread::Builder::new().name("view-encoder".into()).spawn(move || {
            for taken in frames {
                let camera = &cameras[taken.camera];
                let view = FrameView {
                    camera: taken.camera,
                    camera_id: &camera.id,
                    frame: &taken.frame,
                    frame_index: taken.frame_index,
                    clock_s: taken.clock_s,
                    regions: &taken.regions,
                    classified: &taken.classified,
                    tracks: &taken.tracks,
                };
                match draw::annotate(&view, camera).and_then(|image| draw::jpeg(&image, JPEG_QUALITY)) {
                    Ok(jpeg) => hub.offer_frame(&camera.id, jpeg, taken.frame.cols().max(0) as u32, taken.frame.rows().max(0) as u32, taken.frame_index),
                    Err(error) => tracing::warn!(camera = %camera.id, %error, "cannot draw the page's picture; the pipeline goes on"),
                }
            }
        })?;
        let min_gap = Duration::from_secs_f64(1.0 / max_fps.max(0.01));
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
        let Ok(frame) = view.frame.try_clone() else { return };
        let taken = Taken {
            camera: view.camera,
            frame,
            frame_index: view.frame_index,
            clock_s: view.clock_s,
            regions: view.regions.to_vec(),
            classified: view.classified.to_vec(),
            tracks: view.tracks.to_vec(),
        };
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
