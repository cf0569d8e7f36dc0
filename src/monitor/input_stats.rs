//! What a camera sees, in three numbers cheap enough for the camera thread:
//! brightness (mean luma), contrast (its standard deviation) and sharpness
//! (variance of the Laplacian). Measured on a copy scaled to `WIDTH`
//! pixels so that the figures do not depend on the camera's resolution.

use opencv::core::{Mat, Scalar, Size, CV_64F};
use opencv::imgproc;
use opencv::prelude::*;

use super::drift::InputStats;

const WIDTH: i32 = 320;

pub fn measure(frame: &Mat) -> opencv::Result<InputStats> {
    let (width, height) = (frame.cols(), frame.rows());
    if width <= 0 || height <= 0 {
        return Err(opencv::Error::new(opencv::core::StsBadArg, "empty frame".to_string()));
    }
    let scaled_height = ((height as i64 * WIDTH as i64) / width as i64).max(1) as i32;
    let small = super::samples::shrink(frame, Size::new(WIDTH, scaled_height))?;
    let mut gray = Mat::default();
    if small.channels() == 1 {
        gray = small;
    } else {
        imgproc::cvt_color_def(&small, &mut gray, imgproc::COLOR_BGR2GRAY)?;
    }
    let (mut mean, mut deviation) = (Scalar::default(), Scalar::default());
    opencv::core::mean_std_dev(&gray, &mut mean, &mut deviation, &opencv::core::no_array())?;
    let mut laplacian = Mat::default();
    imgproc::laplacian_def(&gray, &mut laplacian, CV_64F)?;
    let (mut lap_mean, mut lap_deviation) = (Scalar::default(), Scalar::default());
    opencv::core::mean_std_dev(&laplacian, &mut lap_mean, &mut lap_deviation, &opencv::core::no_array())?;
    Ok(InputStats { brightness: mean[0], contrast: deviation[0], sharpness: lap_deviation[0] * lap_deviation[0] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{Vec3b, CV_8UC3};

    fn checkerboard(level_a: u8, level_b: u8) -> Mat {
        let mut frame = Mat::new_rows_cols_with_default(240, 640, CV_8UC3, Scalar::all(0.0)).unwrap();
        for y in 0..240 {
            for x in 0..640 {
                let v = if (x / 16 + y / 16) % 2 == 0 { level_a } else { level_b };
                *frame.at_2d_mut::<Vec3b>(y, x).unwrap() = Vec3b::from([v, v, v]);
            }
        }
        frame
    }

    #[test]
    fn dark_flat_and_blurred_frames_read_as_such() {
        let sharp = measure(&checkerboard(40, 220)).unwrap();
        assert!((sharp.brightness - 130.0).abs() < 2.0, "{sharp:?}");
        assert!((sharp.contrast - 90.0).abs() < 2.0, "{sharp:?}");
        let dark = measure(&checkerboard(4, 22)).unwrap();
        assert!(dark.brightness < 15.0 && dark.contrast < 10.0, "{dark:?}");
        let mut blurred = Mat::default();
        imgproc::gaussian_blur_def(&checkerboard(40, 220), &mut blurred, Size::new(31, 31), 12.0).unwrap();
        let blurred = measure(&blurred).unwrap();
        assert!(blurred.sharpness * 10.0 < sharp.sharpness, "blurred {blurred:?} vs sharp {sharp:?}");
        assert!((blurred.brightness - sharp.brightness).abs() < 5.0);
    }
}
