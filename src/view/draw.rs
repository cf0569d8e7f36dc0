//! Draws what the agent sees over a frame, for the person setting up the
//! camera: lanes (filled, translucent, labelled), counting lines with an
//! arrow for their forward direction, calibration points, the regions found
//! and the tracks in view with their name, class and lane; then JPEG.

use opencv::core::{Mat, Point, Rect, Scalar, Vector};
use opencv::imgproc::{self, FONT_HERSHEY_SIMPLEX, LINE_AA};
use opencv::prelude::*;

use crate::config::CameraConfig;
use crate::pipeline::view::FrameView;
use crate::privacy::PrivacyMasks;
use crate::util::plane::cross;

/// How much of a lane's colour covers the pixels inside it.
pub const LANE_ALPHA: f64 = 0.35;

/// Lane fills, BGR; lane i takes colour i (mod the palette).
pub const LANE_COLOURS: [[f64; 3]; 6] =
    [[255.0, 80.0, 0.0], [0.0, 200.0, 255.0], [255.0, 0.0, 200.0], [0.0, 255.0, 120.0], [0.0, 90.0, 255.0], [200.0, 200.0, 0.0]];
const LINE: [f64; 3] = [0.0, 0.0, 255.0];
const REGION: [f64; 3] = [0.0, 255.0, 255.0];
const CONFIRMED: [f64; 3] = [0.0, 255.0, 0.0];
const TENTATIVE: [f64; 3] = [160.0, 160.0, 160.0];
const CALIBRATION: [f64; 3] = [255.0, 255.0, 255.0];
/// Outlines the privacy masks (BGR magenta).
const MASK: [f64; 3] = [255.0, 0.0, 255.0];

#[derive(Debug, thiserror::Error)]
pub enum DrawError {
    #[error("cannot draw on the frame: {0}")]
    OpenCv(#[from] opencv::Error),
    #[error("the frame is empty: nothing to draw on")]
    Empty,
}

fn scalar(c: [f64; 3]) -> Scalar {
    Scalar::new(c[0], c[1], c[2], 0.0)
}

fn point(p: [f64; 2]) -> Point {
    Point::new(p[0].round() as i32, p[1].round() as i32)
}

/// Text with a dark outline, readable on any background, moved inside the
/// image if it would run off it (a calibration point on the frame's edge).
fn label(image: &mut Mat, text: &str, at: Point, colour: [f64; 3], scale: f64) -> opencv::Result<()> {
    let mut baseline = 0;
    let size = imgproc::get_text_size(text, FONT_HERSHEY_SIMPLEX, scale, 4, &mut baseline)?;
    let x = at.x.min(image.cols() - size.width - 2).max(2);
    let y = at.y.max(size.height + 2).min(image.rows() - baseline - 2);
    let at = Point::new(x, y);
    imgproc::put_text(image, text, at, FONT_HERSHEY_SIMPLEX, scale, Scalar::all(0.0), 4, LINE_AA, false)?;
    imgproc::put_text(image, text, at, FONT_HERSHEY_SIMPLEX, scale, scalar(colour), 1, LINE_AA, false)
}

/// Text size that stays readable from 320×240 to 4K.
fn text_scale(image: &Mat) -> f64 {
    (image.cols() as f64 / 1280.0).clamp(0.4, 1.5)
}

/// The layout only (lanes, lines, calibration), on a copy of `frame`.
pub fn layout(frame: &Mat, camera: &CameraConfig) -> Result<Mat, DrawError> {
    if frame.empty() {
        return Err(DrawError::Empty);
    }
    let scale = text_scale(frame);
    // Privacy masks first: not one of their pixels may reach the picture,
    // blended into a lane's tint or otherwise.
    let masks = PrivacyMasks::of(camera);
    let masked;
    let frame = if masks.is_empty() {
        frame
    } else {
        let mut copy = frame.try_clone()?;
        masks.hide(&mut copy, Point::default())?;
        masked = copy;
        &masked
    };
    // Lanes: filled on a copy, blended back, so the road shows through.
    let mut out = frame.try_clone()?;
    if !camera.lanes.is_empty() {
        let polygons: Vec<Vector<Vector<Point>>> =
            camera.lanes.iter().map(|lane| std::iter::once(lane.polygon.iter().map(|p| point(*p)).collect()).collect()).collect();
        let mut filled = frame.try_clone()?;
        for (i, polygon) in polygons.iter().enumerate() {
            imgproc::fill_poly(&mut filled, polygon, scalar(LANE_COLOURS[i % LANE_COLOURS.len()]), LINE_AA, 0, Point::default())?;
        }
        opencv::core::add_weighted(&filled, LANE_ALPHA, frame, 1.0 - LANE_ALPHA, 0.0, &mut out, -1)?;
        for (i, (lane, polygon)) in camera.lanes.iter().zip(&polygons).enumerate() {
            let colour = LANE_COLOURS[i % LANE_COLOURS.len()];
            imgproc::polylines(&mut out, polygon, true, scalar(colour), 1, LINE_AA, 0)?;
            let n = lane.polygon.len().max(1) as f64;
            let centre = lane.polygon.iter().fold([0.0, 0.0], |c, p| [c[0] + p[0] / n, c[1] + p[1] / n]);
            label(&mut out, &format!("lane {}", lane.id), point(centre), colour, scale)?;
        }
    }
    // The masks solid again over any tint, outlined and named for the installer.
    masks.hide(&mut out, Point::default())?;
    for (corners, bounds, inference) in masks.outlines() {
        imgproc::polylines(&mut out, corners, true, scalar(MASK), 1, LINE_AA, 0)?;
        let text = if inference { "privacy mask (hidden from inference)" } else { "privacy mask" };
        label(&mut out, text, Point::new(bounds.x + 6, bounds.y + 18), MASK, scale * 0.8)?;
    }
    // Lines, with an arrow toward the side a forward crossing goes to.
    for line in &camera.lines {
        imgproc::line(&mut out, point(line.from), point(line.to), scalar(LINE), 2, LINE_AA, 0)?;
        let mid = [(line.from[0] + line.to[0]) / 2.0, (line.from[1] + line.to[1]) / 2.0];
        let (dx, dy) = (line.to[0] - line.from[0], line.to[1] - line.from[1]);
        let length = dx.hypot(dy).max(1.0);
        let arrow = (frame.cols().min(frame.rows()) as f64 / 12.0).max(12.0);
        let mut normal = [-dy / length * arrow, dx / length * arrow];
        // A forward crossing starts where `cross` is positive and ends where it is negative.
        if cross(line.from, line.to, [mid[0] + normal[0], mid[1] + normal[1]]) > 0.0 {
            normal = [-normal[0], -normal[1]];
        }
        imgproc::arrowed_line(&mut out, point(mid), point([mid[0] + normal[0], mid[1] + normal[1]]), scalar(LINE), 2, LINE_AA, 0, 0.3)?;
        label(&mut out, &format!("line {} forward", line.id), point([mid[0] + normal[0], mid[1] + normal[1]]), LINE, scale)?;
    }
    if let Some(calibration) = &camera.calibration {
        for (i, (image, ground)) in calibration.image.iter().zip(&calibration.ground).enumerate() {
            imgproc::circle(&mut out, point(*image), 5, scalar(CALIBRATION), 2, LINE_AA, 0)?;
            let text = format!("P{} ({:.1} m, {:.1} m)", i + 1, ground[0], ground[1]);
            label(&mut out, &text, point([image[0] + 8.0, image[1] - 8.0]), CALIBRATION, scale * 0.8)?;
        }
    }
    Ok(out)
}

/// The layout, the regions and the tracks of one view.
pub fn annotate(view: &FrameView<'_>, camera: &CameraConfig) -> Result<Mat, DrawError> {
    let mut out = layout(view.frame, camera)?;
    let scale = text_scale(&out);
    for region in view.regions {
        imgproc::rectangle(&mut out, *region, scalar(REGION), 1, LINE_AA, 0)?;
    }
    for track in view.tracks {
        let b = track.bbox;
        let rect = Rect::new(b.x.round() as i32, b.y.round() as i32, b.w.round() as i32, b.h.round() as i32);
        let colour = if track.confirmed { CONFIRMED } else { TENTATIVE };
        imgproc::rectangle(&mut out, rect, scalar(colour), 2, LINE_AA, 0)?;
        let mut text = track.name.clone();
        if let Some(class) = &track.class {
            text.push(' ');
            text.push_str(class);
        }
        if let Some(lane) = &track.lane {
            text.push_str(" lane ");
            text.push_str(lane);
        }
        label(&mut out, &text, Point::new(rect.x, (rect.y - 6).max(12)), colour, scale * 0.8)?;
    }
    let header = format!("{}  frame {}  t={:.2}s", view.camera_id, view.frame_index, view.clock_s);
    let bottom = out.rows();
    label(&mut out, &header, Point::new(8, bottom), CALIBRATION, scale)?;
    Ok(out)
}

/// JPEG bytes of `image` at `quality` (1–100).
pub fn jpeg(image: &Mat, quality: i32) -> Result<Vec<u8>, DrawError> {
    let mut buffer = Vector::<u8>::new();
    let params: Vector<i32> = [opencv::imgcodecs::IMWRITE_JPEG_QUALITY, quality.clamp(1, 100)].into_iter().collect();
    opencv::imgcodecs::imencode(".jpg", image, &mut buffer, &params)?;
    Ok(buffer.to_vec())
}

/// PNG bytes of `image` (lossless: for documentation and pixel checks).
pub fn png(image: &Mat) -> Result<Vec<u8>, DrawError> {
    let mut buffer = Vector::<u8>::new();
    opencv::imgcodecs::imencode(".png", image, &mut buffer, &Vector::new())?;
    Ok(buffer.to_vec())
}
