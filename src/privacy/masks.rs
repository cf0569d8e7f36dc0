//! A camera's privacy masks, drawn solid black on a frame or on a crop of it.

use opencv::core::{Mat, Point, Rect, Scalar, Vector};
use opencv::imgproc;
use opencv::prelude::*;

use crate::config::CameraConfig;

/// One mask: its corners in frame pixels, the box around them, and whether
/// inference must not see it either.
#[derive(Debug, Clone)]
struct Mask {
    corners: Vector<Point>,
    bounds: Rect,
    inference: bool,
}

/// The masks of one camera (none: nothing is hidden).
#[derive(Debug, Clone, Default)]
pub struct PrivacyMasks {
    masks: Vec<Mask>,
}

impl PrivacyMasks {
    /// `camera`'s `[[cameras.privacy_masks]]`, corners rounded to whole pixels.
    pub fn of(camera: &CameraConfig) -> PrivacyMasks {
        let masks = camera
            .privacy_masks
            .iter()
            .map(|m| {
                let corners: Vec<Point> = m.polygon.iter().map(|[x, y]| Point::new(x.round() as i32, y.round() as i32)).collect();
                let (x0, y0) = (corners.iter().map(|p| p.x).min().unwrap_or(0), corners.iter().map(|p| p.y).min().unwrap_or(0));
                let (x1, y1) = (corners.iter().map(|p| p.x).max().unwrap_or(0), corners.iter().map(|p| p.y).max().unwrap_or(0));
                Mask { corners: Vector::from_iter(corners), bounds: Rect::new(x0, y0, x1 - x0 + 1, y1 - y0 + 1), inference: m.apply_to_inference }
            })
            .collect();
        PrivacyMasks { masks }
    }

    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }

    pub fn count(&self) -> usize {
        self.masks.len()
    }

    /// Each mask's corners (whole pixels, as filled) and whether it is hidden
    /// from inference too: for drawing the masks where the installer sees them.
    pub fn outlines(&self) -> impl Iterator<Item = (&Vector<Point>, Rect, bool)> {
        self.masks.iter().map(|m| (&m.corners, m.bounds, m.inference))
    }

    /// Some mask is to be hidden from region finding and classification too.
    pub fn hides_from_inference(&self) -> bool {
        self.masks.iter().any(|m| m.inference)
    }

    /// Fills every mask on `image`, a picture whose top-left pixel is at
    /// `origin` in the frame (a crop; `(0, 0)` for the whole frame).
    pub fn hide(&self, image: &mut Mat, origin: Point) -> opencv::Result<()> {
        self.fill(image, origin, |_| true)
    }

    /// Fills the masks marked `apply_to_inference` on a whole frame.
    pub fn hide_from_inference(&self, frame: &mut Mat) -> opencv::Result<()> {
        self.fill(frame, Point::new(0, 0), |m| m.inference)
    }

    fn fill(&self, image: &mut Mat, origin: Point, which: impl Fn(&Mask) -> bool) -> opencv::Result<()> {
        let area = Rect::new(origin.x, origin.y, image.cols(), image.rows());
        for mask in self.masks.iter().filter(|m| which(m)) {
            if (mask.bounds & area).area() <= 0 {
                continue;
            }
            let polygons: Vector<Vector<Point>> = Vector::from_iter([mask.corners.clone()]);
            let shift = Point::new(-origin.x, -origin.y);
            imgproc::fill_poly(image, &polygons, Scalar::all(0.0), imgproc::LINE_8, 0, shift)?;
            // fill_poly takes the pixels whose centres are inside; the edge's
            // own pixels too, so none just inside a slanted edge shows.
            let shifted: Vector<Point> = mask.corners.iter().map(|p| p + shift).collect();
            imgproc::polylines(image, &shifted, true, Scalar::all(0.0), 1, imgproc::LINE_8, 0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{Vec3b, CV_8UC3};

    fn camera(masks: &str) -> CameraConfig {
        let text = format!("id = \"c\"\nurl = \"x.mp4\"\n{masks}");
        toml::from_str(&text).unwrap()
    }

    fn white(width: i32, height: i32) -> Mat {
        Mat::new_rows_cols_with_default(height, width, CV_8UC3, Scalar::all(255.0)).unwrap()
    }

    fn is_black(image: &Mat, x: i32, y: i32) -> bool {
        *image.at_2d::<Vec3b>(y, x).unwrap() == Vec3b::from([0, 0, 0])
    }

    #[test]
    fn a_crop_is_masked_where_the_mask_falls_on_it_and_nowhere_else() {
        let masks = PrivacyMasks::of(&camera("[[privacy_masks]]\npolygon = [[100, 50], [200, 50], [200, 150], [100, 150]]\n"));
        let mut frame = white(320, 240);
        masks.hide(&mut frame, Point::new(0, 0)).unwrap();
        assert!(is_black(&frame, 100, 50) && is_black(&frame, 150, 100) && is_black(&frame, 200, 150));
        assert!(!is_black(&frame, 99, 100) && !is_black(&frame, 201, 100) && !is_black(&frame, 150, 49) && !is_black(&frame, 150, 151));
        // A crop from (150, 100), 100 × 100: the mask covers its top-left 51 × 51.
        let mut crop = white(100, 100);
        masks.hide(&mut crop, Point::new(150, 100)).unwrap();
        assert!(is_black(&crop, 0, 0) && is_black(&crop, 50, 50));
        assert!(!is_black(&crop, 51, 10) && !is_black(&crop, 10, 51) && !is_black(&crop, 99, 99));
        // A crop the mask does not reach is left as it is.
        let mut away = white(50, 50);
        masks.hide(&mut away, Point::new(250, 180)).unwrap();
        assert!((0..50).all(|i| !is_black(&away, i, i)));
    }

    #[test]
    fn only_the_masks_marked_so_are_hidden_from_inference() {
        let masks = PrivacyMasks::of(&camera(
            "[[privacy_masks]]\npolygon = [[0, 0], [50, 0], [50, 50], [0, 50]]\n[[privacy_masks]]\npolygon = [[100, 0], [150, 0], [150, 50], [100, 50]]\napply_to_inference = true\n",
        ));
        assert!(masks.hides_from_inference() && masks.count() == 2);
        let mut frame = white(200, 100);
        masks.hide_from_inference(&mut frame).unwrap();
        assert!(!is_black(&frame, 25, 25) && is_black(&frame, 125, 25));
        assert!(!PrivacyMasks::of(&camera("")).hides_from_inference() && PrivacyMasks::of(&camera("")).is_empty());
    }
}
