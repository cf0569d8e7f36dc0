//! Where the monitor meets the frame path: stages the inference and camera
//! threads call for every frame, and for every vehicle of a tracked camera.
//! Each takes what the monitor needs and queues it without waiting (a full
//! queue drops it, counted).

use opencv::core::Mat;
use std::sync::Arc;

use super::{input_stats, samples::SampleTap, MonitorInput, MonitorSender, PredictionDigest, VehicleDigest};
use crate::infer::ModelIdentity;
use crate::pipeline::camera::CameraTap;
use crate::pipeline::inference::{Classified, FrameTap};
use crate::pipeline::vehicles::{Seen, VehicleTap};

/// Sends a digest of every classified frame; the publisher's hook later
/// says which `seq` its prediction got.
pub struct DigestTap {
    pub(super) sender: MonitorSender,
}

impl FrameTap for DigestTap {
    fn classified(&mut self, frame: &Classified<'_>) {
        let digest = PredictionDigest {
            prediction_id: frame.prediction_id,
            camera: frame.camera.to_string(),
            model: frame.model.clone(),
            reference: frame.reference.cloned(),
            regions: frame.regions.iter().map(|r| (r.class.clone(), r.top_k.first().map_or(0.0, |t| t.score))).collect(),
            tracked: frame.tracked,
        };
        self.sender.offer(MonitorInput::Digest(Box::new(digest)));
    }
}

/// Measures the input statistics of every `every`-th decoded frame.
pub struct InputTap {
    pub(super) sender: MonitorSender,
    pub(super) every: u64,
}

impl CameraTap for InputTap {
    fn decoded(&mut self, camera: &str, frame_index: u64, frame: &Mat) {
        if frame_index % self.every != 0 {
            return;
        }
        match input_stats::measure(frame) {
            Ok(stats) => self.sender.offer(MonitorInput::Input { camera: camera.to_string(), stats }),
            Err(error) => tracing::debug!(%error, frame = frame_index, "cannot measure the frame for drift"),
        }
    }
}

/// Sends each vehicle of a tracked camera, so that feedback can name it by its track.
pub struct VehicleDigestTap {
    pub(super) sender: MonitorSender,
    /// The last vehicle's model, shared by the next ones while it serves.
    pub(super) model: Option<Arc<ModelIdentity>>,
}

impl VehicleTap for VehicleDigestTap {
    fn vehicle(&mut self, vehicle: &Seen<'_>) {
        let message = vehicle.message;
        let model = match &self.model {
            Some(model) if **model == message.model => model.clone(),
            _ => self.model.insert(Arc::new(message.model.clone())).clone(),
        };
        let digest = VehicleDigest { track: message.track.clone(), camera: message.camera.clone(), model, class: message.class.clone() };
        self.sender.offer(MonitorInput::Vehicle(Box::new(digest)));
    }
}

/// Offers every region of a classified frame to the sampler; not a tracked
/// camera's, whose vehicles are offered instead, once each.
impl FrameTap for SampleTap {
    fn classified(&mut self, frame: &Classified<'_>) {
        if frame.tracked {
            return;
        }
        for (index, region) in frame.regions.iter().enumerate() {
            self.offer(frame.frame, frame.prediction_id, frame.camera, frame.captured_at, frame.frame_index, index, frame.model, region);
        }
    }
}

/// Offers each vehicle's best view to the sampler.
impl VehicleTap for SampleTap {
    fn vehicle(&mut self, vehicle: &Seen<'_>) {
        self.offer_vehicle(vehicle.message, vehicle.crop);
    }
}
