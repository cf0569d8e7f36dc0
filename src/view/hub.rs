//! `ViewHub`: what the installer's page shows, handed from the agent's
//! threads to the HTTP server — the newest annotated JPEG of each camera,
//! the vehicles counted since start, and the model serving.
//!
//! Writers are plain threads (the view's encoder, the inference thread's
//! vehicle reports) and never wait on a reader: each camera's newest frame
//! sits in a `tokio::sync::watch` channel, which holds exactly one value, so
//! an MJPEG client that reads slowly skips frames instead of queueing them.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

use crate::wire::ActiveModel;

/// One annotated frame, as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Shared, so that every client and `latest` get the same bytes without a copy.
    pub jpeg: Arc<Vec<u8>>,
    pub width: u32,
    pub height: u32,
    /// The camera's own frame number (from the frame path).
    pub frame_index: u64,
    /// Given by the hub, increasing over all cameras: a stream sends a frame
    /// once, and a client can tell a new frame from one it has.
    pub seq: u64,
}

/// (lane, class) → vehicles; `None` is "no lane". Ordered, so the page's
/// table keeps its rows in place between refreshes.
type Tally = BTreeMap<(Option<String>, String), u64>;

pub struct ViewHub {
    device: String,
    /// In the config's order, which the page keeps.
    cameras: Vec<String>,
    frames: HashMap<String, watch::Sender<Option<Frame>>>,
    next_seq: AtomicU64,
    counts: Mutex<HashMap<String, Tally>>,
    /// The model serving, read when the page asks (swaps and rollbacks show at once).
    model: Mutex<Option<ActiveModel>>,
}

/// The JSON of `/state.json`: the page's one contract with the server
/// (page.html reads these names).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewState {
    pub device: String,
    /// Null until the agent says which model serves.
    pub model: Option<ModelState>,
    pub cameras: Vec<CameraState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelState {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CameraState {
    pub id: String,
    /// The newest frame's number and size; null before the first frame.
    pub frame_index: Option<u64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub counts: Vec<CountRow>,
    /// Every vehicle of this camera since start.
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CountRow {
    /// Null: the vehicle was in no lane.
    pub lane: Option<String>,
    pub class: String,
    pub count: u64,
}

impl ViewHub {
    /// `device` is shown in the page's title; `cameras` are the only ones
    /// the hub takes frames and counts for (the page has a place for each).
    pub fn new(device: &str, cameras: Vec<String>) -> Arc<ViewHub> {
        let frames = cameras.iter().map(|id| (id.clone(), watch::Sender::new(None))).collect();
        Arc::new(ViewHub {
            device: device.to_string(),
            cameras,
            frames,
            next_seq: AtomicU64::new(1),
            counts: Mutex::new(HashMap::new()),
            model: Mutex::new(None),
        })
    }

    pub fn cameras(&self) -> &[String] {
        &self.cameras
    }

    /// Called from the view's encoder thread (plain std thread, not tokio):
    /// the newest annotated frame of a camera. Replaces the previous one;
    /// wakes every stream of that camera. A camera the hub was not built
    /// with is ignored.
    pub fn offer_frame(&self, camera: &str, jpeg: Vec<u8>, width: u32, height: u32, frame_index: u64) {
        let Some(sender) = self.frames.get(camera) else {
            tracing::debug!(camera, "view: a frame of a camera the page does not show, ignored");
            return;
        };
        let jpeg = Arc::new(jpeg);
        // The seq is taken under the channel's lock, so a camera's frames are
        // stored in seq order even when two threads offer at once; and
        // send_modify stores the frame while no stream listens (`latest` reads it).
        sender.send_modify(|slot| {
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            *slot = Some(Frame { jpeg, width, height, frame_index, seq });
        });
    }

    pub fn latest(&self, camera: &str) -> Option<Frame> {
        self.frames.get(camera)?.borrow().clone()
    }

    /// A receiver of a camera's newest frame (None: unknown camera). Its
    /// current value counts as seen; call `mark_changed` to take it first.
    pub fn subscribe(&self, camera: &str) -> Option<watch::Receiver<Option<Frame>>> {
        Some(self.frames.get(camera)?.subscribe())
    }

    /// A vehicle reported (its track ended): counts since start per camera,
    /// per lane (None = "no lane"), per class. A camera the hub was not
    /// built with is ignored.
    pub fn count_vehicle(&self, camera: &str, lane: Option<&str>, class: &str) {
        if !self.frames.contains_key(camera) {
            tracing::debug!(camera, "view: a vehicle of a camera the page does not show, ignored");
            return;
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(camera.to_string()).or_default().entry((lane.map(str::to_string), class.to_string())).or_default() += 1;
    }

    /// Shows the model `active` names (the inference thread keeps it current).
    pub fn follow_model(&self, active: ActiveModel) {
        *self.model.lock().unwrap_or_else(|e| e.into_inner()) = Some(active);
    }

    /// What the page shows now.
    pub fn state(&self) -> ViewState {
        let model = self.model.lock().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|active| {
            let identity = active.read().ok()?;
            Some(ModelState { name: identity.name.clone(), version: identity.version.clone() })
        });
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let cameras = self
            .cameras
            .iter()
            .map(|id| {
                let frame = self.latest(id);
                let rows: Vec<CountRow> = counts
                    .get(id)
                    .into_iter()
                    .flatten()
                    .map(|((lane, class), count)| CountRow { lane: lane.clone(), class: class.clone(), count: *count })
                    .collect();
                CameraState {
                    id: id.clone(),
                    frame_index: frame.as_ref().map(|f| f.frame_index),
                    width: frame.as_ref().map(|f| f.width),
                    height: frame.as_ref().map(|f| f.height),
                    total: rows.iter().map(|r| r.count).sum(),
                    counts: rows,
                }
            })
            .collect();
        ViewState { device: self.device.clone(), model, cameras }
    }

    /// JSON for the page: {"device":…, "model":{name,version}, "cameras":[{"id",
    /// "frame_index", "width","height", "counts":[{"lane","class","count"}], "total"}]}
    pub fn state_json(&self) -> serde_json::Value {
        // Plain structs of strings and integers: serialising them cannot fail.
        serde_json::to_value(self.state()).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hub() -> Arc<ViewHub> {
        ViewHub::new("pole-17", vec!["north".into(), "south".into()])
    }

    #[test]
    fn the_newest_frame_replaces_the_previous_and_seq_increases_across_cameras() {
        let hub = hub();
        assert_eq!(hub.latest("north"), None);
        hub.offer_frame("north", vec![1], 640, 360, 10);
        hub.offer_frame("south", vec![2], 320, 180, 3);
        hub.offer_frame("north", vec![3], 640, 360, 11);
        let north = hub.latest("north").unwrap();
        let south = hub.latest("south").unwrap();
        assert_eq!((north.jpeg.as_slice(), north.frame_index, north.width, north.height), (&[3u8][..], 11, 640, 360));
        assert!(north.seq > south.seq && south.seq > 0, "{} {}", north.seq, south.seq);
    }

    #[test]
    fn an_unknown_camera_is_ignored() {
        let hub = hub();
        hub.offer_frame("east", vec![1], 1, 1, 1);
        hub.count_vehicle("east", None, "car");
        assert_eq!(hub.latest("east"), None);
        assert!(hub.subscribe("east").is_none());
        assert!(hub.state().cameras.iter().all(|c| c.total == 0));
    }

    #[test]
    fn a_subscriber_wakes_on_a_new_frame_and_sees_only_the_newest() {
        let hub = hub();
        let mut rx = hub.subscribe("north").unwrap();
        assert!(!rx.has_changed().unwrap());
        hub.offer_frame("north", vec![1], 8, 8, 1);
        hub.offer_frame("north", vec![2], 8, 8, 2);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().as_ref().unwrap().frame_index, 2, "a slow reader skips to the newest");
        assert!(!rx.has_changed().unwrap());
    }

    fn active(name: &str, version: &str) -> ActiveModel {
        Arc::new(std::sync::RwLock::new(crate::wire::ModelIdentity { name: name.into(), version: version.into(), sha256: String::new() }))
    }

    #[test]
    fn the_state_counts_per_lane_and_class_in_the_documented_shape() {
        let hub = hub();
        hub.follow_model(active("vehicle-classifier", "7"));
        hub.count_vehicle("north", Some("east-1"), "car");
        hub.count_vehicle("north", Some("east-1"), "car");
        hub.count_vehicle("north", None, "truck");
        hub.count_vehicle("north", Some("east-1"), "bus");
        hub.offer_frame("north", vec![0xff, 0xd8], 640, 360, 42);
        assert_eq!(
            hub.state_json(),
            json!({
                "device": "pole-17",
                "model": {"name": "vehicle-classifier", "version": "7"},
                "cameras": [
                    {"id": "north", "frame_index": 42, "width": 640, "height": 360, "total": 4, "counts": [
                        {"lane": null, "class": "truck", "count": 1},
                        {"lane": "east-1", "class": "bus", "count": 1},
                        {"lane": "east-1", "class": "car", "count": 2},
                    ]},
                    {"id": "south", "frame_index": null, "width": null, "height": null, "total": 0, "counts": []},
                ],
            })
        );
    }

    #[test]
    fn writers_on_plain_threads_do_not_lose_counts() {
        let hub = hub();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let hub = hub.clone();
                std::thread::spawn(move || {
                    for i in 0..250 {
                        hub.count_vehicle("south", Some("west"), "car");
                        hub.offer_frame("south", vec![0], 2, 2, i);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(hub.state().cameras[1].total, 1000);
        assert_eq!(hub.latest("south").unwrap().seq, 1000);
    }
}
