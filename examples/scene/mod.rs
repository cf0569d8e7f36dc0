//! What the clip makers share (`make_road_clip`, `make_highway_clip`,
//! `make_queue_clip`): the synthetic road, the vehicle photographs as sprites, the ffmpeg encoder and
//! a truth box clipped to the frame. Not an example itself (no `main.rs`).

#![allow(dead_code)] // each maker uses its own part

use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};
use std::io::Write;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

pub const FPS: u32 = 25;
/// Empty road first, so a background model can learn it.
pub const LEAD_IN_FRAMES: u32 = 20;

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const GRASS: [i32; 3] = [70, 110, 55];
/// The road clip's asphalt.
pub const DARK_ASPHALT: [i32; 3] = [92, 92, 96];
const EDGE_LINE: [i32; 3] = [215, 215, 205];
const LANE_LINE: [i32; 3] = [225, 225, 215];

/// A painted line along the road: the rows it covers, dashed or solid.
pub struct Marking {
    pub rows: RangeInclusive<i32>,
    /// Dash and gap length in pixels; `None` for a solid line.
    pub dash: Option<i32>,
}

/// A fixed straight road across the frame seen from above the verge:
/// textured asphalt between grass verges, solid edge lines 4 px inside the
/// asphalt, and the lane markings given.
pub struct Road {
    pub width: u32,
    pub height: u32,
    /// Rows of asphalt (edge lines included); grass above and below.
    pub asphalt: RangeInclusive<i32>,
    pub markings: Vec<Marking>,
    /// RGB before the noise (±10 per pixel).
    pub asphalt_colour: [i32; 3],
}

impl Road {
    /// The background every frame starts from. Deterministic noise.
    pub fn draw(&self) -> RgbImage {
        let (top, bottom) = (*self.asphalt.start(), *self.asphalt.end());
        let edges = [top + 4..=top + 8, bottom - 8..=bottom - 4];
        let mut seed: u32 = 0x2545_f491;
        let mut noise = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed % 21) as i32 - 10
        };
        RgbImage::from_fn(self.width, self.height, |x, y| {
            let n = noise();
            let shade = |base: [i32; 3]| Rgb(base.map(|c| (c + n).clamp(0, 255) as u8));
            let (x, y) = (x as i32, y as i32);
            let painted = |m: &Marking| m.rows.contains(&y) && m.dash.is_none_or(|d| (x / d) % 2 == 0);
            if !self.asphalt.contains(&y) {
                shade(GRASS)
            } else if edges.iter().any(|rows| rows.contains(&y)) {
                shade(EDGE_LINE)
            } else if self.markings.iter().any(painted) {
                shade(LANE_LINE)
            } else {
                shade(self.asphalt_colour)
            }
        })
    }
}

impl Road {
    /// Paints a solid line across the lanes (a stop line) on a background
    /// `draw` made: the columns and rows given, in the lane-line colour with
    /// deterministic noise like the road's.
    pub fn paint_across(&self, canvas: &mut RgbImage, cols: RangeInclusive<i32>, rows: RangeInclusive<i32>) {
        let mut seed: u32 = 0x9e37_79b9;
        for y in rows.clone() {
            for x in cols.clone() {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let n = (seed % 21) as i32 - 10;
                if (0..self.width as i32).contains(&x) && (0..self.height as i32).contains(&y) {
                    canvas.put_pixel(x as u32, y as u32, Rgb(LANE_LINE.map(|c| (c + n).clamp(0, 255) as u8)));
                }
            }
        }
    }
}

/// How large a photograph is drawn: by its width or by its height (the other
/// follows from its aspect ratio).
#[derive(Clone, Copy)]
pub enum Scale {
    Width(u32),
    Height(u32),
}

/// A photograph from `media/sources/`, scaled. Never mirrored: the
/// classifier's answer on a borderline photo (the pickup) changes with a
/// mirror image.
pub fn sprite(file: &str, scale: Scale) -> RgbImage {
    let img = image::open(root().join("media/sources").join(file)).expect("source photo").to_rgb8();
    let ratio = |a: u32, b: u32, c: u32| (a as f64 * b as f64 / c as f64).round() as u32;
    let (w, h) = match scale {
        Scale::Width(w) => (w, ratio(img.height(), w, img.width())),
        Scale::Height(h) => (ratio(img.width(), h, img.height()), h),
    };
    imageops::resize(&img, w, h, FilterType::Triangle)
}

/// `sprite` drawn at (x, y) on `canvas`, which it may overhang: its
/// `[x, y, w, h]` clipped to the canvas, and whether it is wholly inside.
pub fn draw(canvas: &mut RgbImage, sprite: &RgbImage, x: i32, y: i32) -> ([i32; 4], bool) {
    imageops::overlay(canvas, sprite, x as i64, y as i64);
    let (w, h) = (sprite.width() as i32, sprite.height() as i32);
    let (cw, ch) = (canvas.width() as i32, canvas.height() as i32);
    let (x0, y0, x1, y1) = (x.max(0), y.max(0), (x + w).min(cw), (y + h).min(ch));
    ([x0, y0, x1 - x0, y1 - y0], x >= 0 && y >= 0 && x + w <= cw && y + h <= ch)
}

/// Frames piped to ffmpeg: H.264 (libx264), yuv420p, one thread (the same
/// bytes on every run), a key frame every `gop` frames.
pub struct Encoder {
    out: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Encoder {
    pub fn start(out: PathBuf, width: u32, height: u32, crf: u32, gop: u32) -> Encoder {
        let mut child = Command::new("ffmpeg")
            .args(["-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s"])
            .arg(format!("{width}x{height}"))
            .args(["-r", &FPS.to_string(), "-i", "-", "-c:v", "libx264", "-preset", "medium", "-crf", &crf.to_string()])
            .args(["-threads", "1", "-g", &gop.to_string(), "-pix_fmt", "yuv420p", "-movflags", "+faststart"])
            .arg(&out)
            .stdin(Stdio::piped())
            .spawn()
            .expect("ffmpeg (apt-get install ffmpeg)");
        let stdin = child.stdin.take();
        Encoder { out, child, stdin }
    }

    pub fn frame(&mut self, canvas: &RgbImage) {
        self.stdin.as_mut().unwrap().write_all(canvas.as_raw()).expect("writing to ffmpeg");
    }

    /// Waits for ffmpeg; the clip's path.
    pub fn finish(mut self) -> PathBuf {
        drop(self.stdin.take());
        assert!(self.child.wait().unwrap().success(), "ffmpeg failed");
        self.out
    }
}

/// The truth file beside the clip, pretty-printed.
pub fn write_truth(path: &Path, doc: &serde_json::Value) {
    std::fs::write(path, serde_json::to_string_pretty(doc).unwrap() + "\n").unwrap();
}
