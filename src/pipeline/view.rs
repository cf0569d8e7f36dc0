//! What the installer's view is shown of a frame: the frame, the regions
//! found in it, and the tracks in view with their class and lane so far.
//! The inference thread asks each [`ViewTap`] first whether it wants this
//! frame (a page takes a couple a second, a snapshot one), so building the
//! tracks' view costs nothing on the frames nobody looks at.

use opencv::core::{Mat, Rect};
use opencv::prelude::*;

use crate::infer::RegionPrediction;
use crate::track::geometry::BBox;

/// A track in view, named as its vehicle message will name it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShownTrack {
    /// The device-wide id once it has one, else `#<key>` (a tentative track).
    pub name: String,
    pub confirmed: bool,
    pub bbox: BBox,
    pub class: Option<String>,
    pub lane: Option<String>,
}

/// One processed frame, as a view tap sees it.
pub struct FrameView<'a> {
    /// Index of the camera in the config.
    pub camera: usize,
    pub camera_id: &'a str,
    pub frame: &'a Mat,
    pub frame_index: u64,
    /// The camera's clock (video time for files).
    pub clock_s: f64,
    /// The regions found in this frame (none on a frame the detector skipped).
    pub regions: &'a [Rect],
    /// The regions classified in this frame, if any were.
    pub classified: &'a [RegionPrediction],
    pub tracks: &'a [ShownTrack],
}

/// A view's own copy, to keep or hand to another thread (a snapshot's
/// frame, the page's next picture).
pub struct OwnedView {
    pub camera: usize,
    pub frame: Mat,
    pub frame_index: u64,
    pub clock_s: f64,
    pub regions: Vec<Rect>,
    pub classified: Vec<RegionPrediction>,
    pub tracks: Vec<ShownTrack>,
}

impl FrameView<'_> {
    /// Copies the frame and everything shown with it.
    pub fn to_owned(&self) -> opencv::Result<OwnedView> {
        Ok(OwnedView {
            camera: self.camera,
            frame: self.frame.try_clone()?,
            frame_index: self.frame_index,
            clock_s: self.clock_s,
            regions: self.regions.to_vec(),
            classified: self.classified.to_vec(),
            tracks: self.tracks.to_vec(),
        })
    }
}

impl OwnedView {
    pub fn view<'a>(&'a self, camera_id: &'a str) -> FrameView<'a> {
        FrameView {
            camera: self.camera,
            camera_id,
            frame: &self.frame,
            frame_index: self.frame_index,
            clock_s: self.clock_s,
            regions: &self.regions,
            classified: &self.classified,
            tracks: &self.tracks,
        }
    }
}

/// A consumer of annotated views (the live page, a snapshot). Runs on the
/// frame path: `show` must take what it needs (a copy of the frame) and
/// hand it off with `try_send`, never wait.
pub trait ViewTap: Send {
    /// Whether it wants this frame of `camera`; asked for every processed frame.
    fn wants(&mut self, camera: usize, frame_index: u64, clock_s: f64) -> bool;
    fn show(&mut self, view: &FrameView<'_>);
}
