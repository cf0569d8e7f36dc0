//! Turns a region of a decoded frame into the model's input, exactly as the
//! model's spec says. `classify` and the live pipeline both come through
//! here, so a still image and a video frame are treated alike.

use opencv::core::{Mat, Rect, Size};
use opencv::imgproc;
use opencv::prelude::*;

use super::spec::{ColorOrder, InputSpec, Layout, Resize};

/// Writes one region of `frame` (8-bit BGR, as OpenCV decodes) into `out`,
/// which holds exactly `3 * width * height` floats for one image.
pub fn region_into(frame: &Mat, rect: Rect, spec: &InputSpec, out: &mut [f32]) -> opencv::Result<()> {
    let (w, h) = (spec.width as i32, spec.height as i32);
    debug_assert_eq!(out.len(), (3 * w * h) as usize);
    let roi = Mat::roi(frame, rect)?;
    let mut resized = Mat::default();
    let interpolation = match spec.resize {
        Resize::Bilinear => imgproc::INTER_LINEAR,
        Resize::Area => imgproc::INTER_AREA,
    };
    imgproc::resize(&roi, &mut resized, Size::new(w, h), 0.0, 0.0, interpolation)?;
    if resized.typ() != opencv::core::CV_8UC3 {
        return Err(opencv::Error::new(
            opencv::core::StsBadArg,
            format!("expected an 8-bit 3-channel frame, got OpenCV type {}", resized.typ()),
        ));
    }
    let bgr = resized.data_bytes()?;
    // Source channel for each model channel: OpenCV gives BGR.
    let source_channel = match spec.color {
        ColorOrder::Rgb => [2usize, 1, 0],
        ColorOrder::Bgr => [0usize, 1, 2],
    };
    let scale = [1.0 / spec.std[0], 1.0 / spec.std[1], 1.0 / spec.std[2]];
    let plane = (w * h) as usize;
    for (pixel, bgr_pixel) in bgr.chunks_exact(3).enumerate() {
        for c in 0..3 {
            let value = (bgr_pixel[source_channel[c]] as f32 - spec.mean[c]) * scale[c];
            let index = match spec.layout {
                Layout::Nchw => c * plane + pixel,
                Layout::Nhwc => pixel * 3 + c,
            };
            out[index] = value;
        }
    }
    Ok(())
}

/// Writes all of `frame` into `out` letterboxed: scaled to fit the spec's
/// size with its aspect kept, centred, the rest filled with grey `pad`.
/// Returns the scale and the (x, y) offset of the frame inside the input.
pub fn letterbox_into(frame: &Mat, spec: &InputSpec, pad: u8, out: &mut [f32]) -> opencv::Result<(f32, [f32; 2])> {
    let (w, h) = (spec.width as i32, spec.height as i32);
    let scale = (w as f32 / frame.cols() as f32).min(h as f32 / frame.rows() as f32);
    let inner = Size::new(((frame.cols() as f32 * scale).round() as i32).clamp(1, w), ((frame.rows() as f32 * scale).round() as i32).clamp(1, h));
    let interpolation = match spec.resize {
        Resize::Bilinear => imgproc::INTER_LINEAR,
        Resize::Area => imgproc::INTER_AREA,
    };
    let mut resized = Mat::default();
    imgproc::resize(frame, &mut resized, inner, 0.0, 0.0, interpolation)?;
    let (left, top) = ((w - inner.width) / 2, (h - inner.height) / 2);
    let mut boxed = Mat::default();
    let grey = opencv::core::Scalar::all(pad as f64);
    opencv::core::copy_make_border(&resized, &mut boxed, top, h - inner.height - top, left, w - inner.width - left, opencv::core::BORDER_CONSTANT, grey)?;
    region_into(&boxed, Rect::new(0, 0, w, h), spec, out)?;
    Ok((scale, [left as f32, top as f32]))
}

/// In-place softmax over one row of logits.
pub fn softmax(values: &mut [f32]) {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in values.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in values.iter_mut() {
        *v /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{Scalar, CV_8UC3};

    fn spec(color: ColorOrder, layout: Layout) -> InputSpec {
        InputSpec {
            name: "input".into(),
            width: 2,
            height: 2,
            layout,
            color,
            resize: Resize::Bilinear,
            mean: [127.0, 127.0, 127.0],
            std: [128.0, 128.0, 128.0],
        }
    }

    #[test]
    fn bgr_frames_become_normalised_rgb_planes() {
        // A uniform frame: B=255, G=127, R=-1 -> 0 after scaling is impossible, so use R=0.
        let frame = Mat::new_rows_cols_with_default(4, 4, CV_8UC3, Scalar::new(255.0, 127.0, 0.0, 0.0)).unwrap();
        let mut out = vec![0.0; 12];
        region_into(&frame, Rect::new(0, 0, 4, 4), &spec(ColorOrder::Rgb, Layout::Nchw), &mut out).unwrap();
        let r = (0.0 - 127.0) / 128.0;
        let g = 0.0;
        let b = (255.0 - 127.0) / 128.0;
        assert_eq!(&out[0..4], &[r; 4]);
        assert_eq!(&out[4..8], &[g; 4]);
        assert_eq!(&out[8..12], &[b; 4]);

        region_into(&frame, Rect::new(0, 0, 4, 4), &spec(ColorOrder::Bgr, Layout::Nhwc), &mut out).unwrap();
        assert_eq!(&out[0..3], &[b, g, r]);
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut v = [1.0, 3.0, 2.0, 10.0];
        softmax(&mut v);
        assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(v[3] > v[1] && v[1] > v[2] && v[2] > v[0]);
    }
}
