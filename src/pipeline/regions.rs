//! Which parts of a frame to classify: the whole frame, fixed rectangles
//! (lanes), or moving objects found by background subtraction.

use opencv::core::{Mat, Point, Ptr, Rect, Size, Vector};
use opencv::imgproc;
use opencv::prelude::*;
use opencv::video;

use crate::config::{MotionConfig, RegionsConfig};

pub enum RegionFinder {
    /// No regions: a detector camera without the motion gate (the inference thread finds them).
    Nothing,
    Full,
    Fixed(Vec<Rect>),
    Motion(MotionDetector),
}

impl RegionFinder {
    pub fn new(config: &RegionsConfig, motion: &MotionConfig) -> opencv::Result<RegionFinder> {
        Ok(match config {
            RegionsConfig::Full => RegionFinder::Full,
            RegionsConfig::Fixed(rects) => RegionFinder::Fixed(
                rects.iter().map(|r| Rect::new(r[0] as i32, r[1] as i32, r[2] as i32, r[3] as i32)).collect(),
            ),
            // The detector finds the regions on the inference thread; motion here is its gate.
            RegionsConfig::Motion | RegionsConfig::Detector => RegionFinder::Motion(MotionDetector::new(motion.clone())?),
        })
    }

    /// Regions of `frame` to classify, clipped to the frame, largest first,
    /// at most `max`. Fixed rectangles that fall outside the frame are dropped.
    pub fn find(&mut self, frame: &Mat, max: usize) -> opencv::Result<Vec<Rect>> {
        let bounds = Rect::new(0, 0, frame.cols(), frame.rows());
        let mut rects = match self {
            RegionFinder::Nothing => Vec::new(),
            RegionFinder::Full => vec![bounds],
            RegionFinder::Fixed(rects) => rects.iter().map(|r| intersect(*r, bounds)).collect(),
            RegionFinder::Motion(detector) => detector.detect(frame)?,
        };
        rects.retain(|r| r.width >= 8 && r.height >= 8);
        rects.sort_by_key(|r| std::cmp::Reverse(r.area()));
        rects.truncate(max);
        Ok(rects)
    }
}

/// Finds moving objects with OpenCV's MOG2 background subtractor on a
/// downscaled grey copy of each frame. It must see every decoded frame (not
/// only those inference gets to), so it runs on the camera thread.
pub struct MotionDetector {
    config: MotionConfig,
    subtractor: Ptr<video::BackgroundSubtractorMOG2>,
    frames_seen: u32,
    small: Mat,
    grey: Mat,
    mask: Mat,
    cleaned: Mat,
    kernel: Mat,
}

impl MotionDetector {
    pub fn new(config: MotionConfig) -> opencv::Result<MotionDetector> {
        // 500 frames of history (20 s at 25 fps); no shadow detection, so a
        // vehicle's shadow is part of its blob rather than a separate one.
        let subtractor = video::create_background_subtractor_mog2(500, 16.0, false)?;
        let kernel = imgproc::get_structuring_element(imgproc::MORPH_ELLIPSE, Size::new(5, 5), Point::new(-1, -1))?;
        Ok(MotionDetector {
            config,
            subtractor,
            frames_seen: 0,
            small: Mat::default(),
            grey: Mat::default(),
            mask: Mat::default(),
            cleaned: Mat::default(),
            kernel,
        })
    }

    pub fn detect(&mut self, frame: &Mat) -> opencv::Result<Vec<Rect>> {
        let (width, height) = (frame.cols(), frame.rows());
        if width == 0 || height == 0 {
            return Ok(Vec::new());
        }
        let scale = (self.config.analysis_width as f64 / width as f64).min(1.0);
        let small_size = Size::new(((width as f64 * scale).round() as i32).max(1), ((height as f64 * scale).round() as i32).max(1));
        imgproc::resize(frame, &mut self.small, small_size, 0.0, 0.0, imgproc::INTER_AREA)?;
        imgproc::cvt_color_def(&self.small, &mut self.grey, imgproc::COLOR_BGR2GRAY)?;
        // Learn fast while warming up, then slowly, so a vehicle crossing the
        // view (or waiting at a light) does not become background.
        let warming_up = self.frames_seen < self.config.warmup_frames;
        let learning_rate = if warming_up { -1.0 } else { self.config.learning_rate };
        video::BackgroundSubtractorMOG2Trait::apply(&mut self.subtractor, &self.grey, &mut self.mask, learning_rate)?;
        self.frames_seen = self.frames_seen.saturating_add(1);
        if warming_up {
            return Ok(Vec::new());
        }
        // Open removes speckle; close joins the parts of one vehicle.
        let anchor = Point::new(-1, -1);
        let border = opencv::core::BORDER_CONSTANT;
        let border_value = imgproc::morphology_default_border_value()?;
        imgproc::morphology_ex(&self.mask, &mut self.cleaned, imgproc::MORPH_OPEN, &self.kernel, anchor, 1, border, border_value)?;
        imgproc::morphology_ex(&self.cleaned, &mut self.mask, imgproc::MORPH_CLOSE, &self.kernel, anchor, 1, border, border_value)?;
        let mut contours: Vector<Vector<Point>> = Vector::new();
        imgproc::find_contours_def(&self.mask, &mut contours, imgproc::RETR_EXTERNAL, imgproc::CHAIN_APPROX_SIMPLE)?;
        let min_area = self.config.min_area_fraction * (small_size.width * small_size.height) as f64;
        let frame_bounds = Rect::new(0, 0, width, height);
        let mut rects = Vec::new();
        for contour in contours.iter() {
            let r = imgproc::bounding_rect(&contour)?;
            if (r.area() as f64) < min_area.max(1.0) {
                continue;
            }
            let up = |v: i32| (v as f64 / scale).round() as i32;
            rects.push(intersect(Rect::new(up(r.x), up(r.y), up(r.width), up(r.height)), frame_bounds));
        }
        Ok(merge_overlapping(rects))
    }
}

pub fn intersect(a: Rect, b: Rect) -> Rect {
    let x0 = a.x.max(b.x);
    let y0 = a.y.max(b.y);
    let x1 = (a.x + a.width).min(b.x + b.width);
    let y1 = (a.y + a.height).min(b.y + b.height);
    Rect::new(x0, y0, (x1 - x0).max(0), (y1 - y0).max(0))
}

fn union(a: Rect, b: Rect) -> Rect {
    let x0 = a.x.min(b.x);
    let y0 = a.y.min(b.y);
    let x1 = (a.x + a.width).max(b.x + b.width);
    let y1 = (a.y + a.height).max(b.y + b.height);
    Rect::new(x0, y0, x1 - x0, y1 - y0)
}

/// Overlapping boxes are parts of one object: join them until none overlap.
fn merge_overlapping(mut rects: Vec<Rect>) -> Vec<Rect> {
    let mut merged = true;
    while merged {
        merged = false;
        'outer: for i in 0..rects.len() {
            for j in (i + 1)..rects.len() {
                if intersect(rects[i], rects[j]).area() > 0 {
                    let joined = union(rects[i], rects[j]);
                    rects.swap_remove(j);
                    rects[i] = joined;
                    merged = true;
                    break 'outer;
                }
            }
        }
    }
    rects
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{Scalar, CV_8UC3};

    #[test]
    fn overlapping_boxes_are_joined_and_separate_ones_kept() {
        let rects = merge_overlapping(vec![Rect::new(0, 0, 10, 10), Rect::new(5, 5, 10, 10), Rect::new(50, 50, 5, 5)]);
        assert_eq!(rects.len(), 2);
        assert!(rects.contains(&Rect::new(0, 0, 15, 15)));
    }

    #[test]
    fn fixed_regions_are_clipped_to_the_frame() {
        let frame = Mat::new_rows_cols_with_default(100, 200, CV_8UC3, Scalar::all(0.0)).unwrap();
        let mut finder = RegionFinder::new(&RegionsConfig::Fixed(vec![[150, 0, 100, 50], [0, 0, 20, 20]]), &MotionConfig::default()).unwrap();
        assert_eq!(finder.find(&frame, 8).unwrap(), vec![Rect::new(150, 0, 50, 50), Rect::new(0, 0, 20, 20)]);
    }

    #[test]
    fn motion_finds_a_moving_block_on_a_still_background() {
        let mut finder = RegionFinder::new(&RegionsConfig::Motion, &MotionConfig::default()).unwrap();
        let mut last = Vec::new();
        for i in 0..40 {
            let mut frame = Mat::new_rows_cols_with_default(240, 320, CV_8UC3, Scalar::all(90.0)).unwrap();
            if i >= 10 {
                // The block appears once the background is learnt.
                let block = Rect::new(10 + i * 5, 100, 60, 40);
                imgproc::rectangle(&mut frame, block, Scalar::new(20.0, 200.0, 240.0, 0.0), -1, imgproc::LINE_8, 0).unwrap();
            }
            last = finder.find(&frame, 8).unwrap();
            if i < 10 {
                assert!(last.is_empty(), "no regions during warm-up");
            }
        }
        assert_eq!(last.len(), 1, "{last:?}");
        let expected = Rect::new(10 + 39 * 5, 100, 60, 40);
        let overlap = intersect(last[0], expected).area() as f64 / union(last[0], expected).area() as f64;
        assert!(overlap > 0.6, "found {:?}, expected about {expected:?}", last[0]);
    }
}
