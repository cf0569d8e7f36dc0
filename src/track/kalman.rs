//! A constant-velocity Kalman filter on a box, for a time step that varies
//! (frames are dropped).
//!
//! State `[cx, cy, w, h, vx, vy, vw, vh]`: centre and size in pixels, their
//! rates in pixels per second. Not SORT's `[cx, cy, area, aspect]`: on a
//! road the width and height change apart (a vehicle entering at the frame
//! edge widens at a fixed height; perspective shrinks them at different
//! rates), and pixel sizes keep the measurement linear (`H = [I 0]`), so the
//! filter stays the textbook one. The noises scale with the box's size, so
//! a far, small vehicle and a near, big one are followed alike.

use nalgebra::{SMatrix, SVector};

use super::geometry::BBox;

type State = SVector<f64, 8>;
type Covariance = SMatrix<f64, 8, 8>;
type Measurement = SVector<f64, 4>;

/// Process noise: the acceleration a vehicle's centre may take, in box
/// sizes per s² (white, per axis). Braking in traffic is ~0.5–1 vehicle
/// length/s²; twice that covers the perspective's apparent acceleration
/// and the stops and starts of a queue without lagging behind them.
const CENTRE_ACCEL_STD: f64 = 2.0;
/// Sizes change slowly (perspective, a vehicle entering or leaving the
/// frame): a quarter of the centre's freedom.
const SIZE_ACCEL_STD: f64 = 0.5;
/// Measurement noise of a region's centre, in box sizes: a motion region
/// jitters by a few pixels on a 100-pixel vehicle.
const CENTRE_MEASURE_STD: f64 = 0.05;
/// A region's size jitters more than its centre (shadows, a bumper lost to
/// the background).
const SIZE_MEASURE_STD: f64 = 0.1;
/// A new track's speed is unknown: up to several of its own lengths per
/// second (a car 100 px long crossing at 15 px/frame at 25 fps is 3.75/s).
const INITIAL_CENTRE_SPEED_STD: f64 = 5.0;
const INITIAL_SIZE_SPEED_STD: f64 = 1.0;
/// The smallest size the filter keeps, in pixels, so noise that scales
/// with the size never vanishes and a box never turns inside out.
const MIN_SIZE: f64 = 1.0;

/// One box followed over time.
#[derive(Debug, Clone)]
pub struct KalmanBox {
    state: State,
    covariance: Covariance,
}

impl KalmanBox {
    /// A filter at `initial`, still; None for a box without area or with a
    /// non-finite field.
    pub fn new(initial: BBox) -> Option<KalmanBox> {
        let measured = measurement(&initial)?;
        let mut state = State::zeros();
        state.fixed_rows_mut::<4>(0).copy_from(&measured);
        let (w, h) = (measured[2], measured[3]);
        let sizes = [w, h, w, h];
        let mut covariance = Covariance::zeros();
        for axis in 0..4 {
            let speed_std = if axis < 2 { INITIAL_CENTRE_SPEED_STD } else { INITIAL_SIZE_SPEED_STD };
            covariance[(axis, axis)] = (measure_std(axis) * sizes[axis]).powi(2);
            covariance[(axis + 4, axis + 4)] = (speed_std * sizes[axis]).powi(2);
        }
        Some(KalmanBox { state, covariance })
    }

    /// Moves the box `dt` seconds on at its velocity; the uncertainty grows
    /// with the time. A `dt` that is not positive and finite changes nothing.
    pub fn predict(&mut self, dt: f64) {
        if !(dt.is_finite() && dt > 0.0) {
            return;
        }
        let mut transition = Covariance::identity();
        for axis in 0..4 {
            transition[(axis, axis + 4)] = dt;
        }
        // Discrete white-noise acceleration: over dt, position moves by
        // a·dt²/2 and velocity by a·dt for one random acceleration a.
        let sizes = self.sizes();
        let mut noise = Covariance::zeros();
        for axis in 0..4 {
            let accel_std = if axis < 2 { CENTRE_ACCEL_STD } else { SIZE_ACCEL_STD };
            let variance = (accel_std * sizes[axis]).powi(2);
            let (position, velocity) = (dt * dt / 2.0, dt);
            noise[(axis, axis)] = variance * position * position;
            noise[(axis, axis + 4)] = variance * position * velocity;
            noise[(axis + 4, axis)] = variance * position * velocity;
            noise[(axis + 4, axis + 4)] = variance * velocity * velocity;
        }
        self.state = transition * self.state;
        self.covariance = transition * self.covariance * transition.transpose() + noise;
        self.keep_size_positive();
    }

    /// Corrects the box with a measured one. A box without area or with a
    /// non-finite field is ignored, as is a step that would not be finite.
    pub fn update(&mut self, measured: BBox) {
        let Some(measured) = measurement(&measured) else { return };
        let sizes = self.sizes();
        let noise = SMatrix::<f64, 4, 4>::from_diagonal(&Measurement::from_fn(|axis, _| {
            (measure_std(axis) * sizes[axis]).powi(2)
        }));
        // H = [I 0]: P·Hᵀ is P's first four columns, H·P·Hᵀ its top-left block.
        let innovation = measured - self.state.fixed_rows::<4>(0);
        let p_ht: SMatrix<f64, 8, 4> = self.covariance.fixed_columns::<4>(0).into_owned();
        let innovation_cov = self.covariance.fixed_view::<4, 4>(0, 0) + noise;
        let Some(inverse) = innovation_cov.cholesky().map(|c| c.inverse()) else { return };
        let gain = p_ht * inverse;
        let state = self.state + gain * innovation;
        // Joseph form: stays symmetric and positive definite in f64 rounding.
        let mut i_kh = Covariance::identity();
        let mut first_columns = i_kh.fixed_columns_mut::<4>(0);
        first_columns -= &gain;
        let covariance = i_kh * self.covariance * i_kh.transpose() + gain * noise * gain.transpose();
        if state.iter().chain(covariance.iter()).all(|v| v.is_finite()) {
            self.state = state;
            self.covariance = covariance;
            self.keep_size_positive();
        }
    }

    /// Scales the velocity by `factor` (in 0..=1): what a track that has no
    /// region does, so its prediction slows instead of running away.
    pub fn damp_velocity(&mut self, factor: f64) {
        if !(factor.is_finite() && (0.0..=1.0).contains(&factor)) {
            return;
        }
        // x' = D·x, P' = D·P·Dᵀ with D = diag(1, 1, 1, 1, f, f, f, f).
        let mut damping = Covariance::identity();
        for axis in 4..8 {
            damping[(axis, axis)] = factor;
        }
        self.state = damping * self.state;
        self.covariance = damping * self.covariance * damping;
    }

    /// The filtered (or predicted) box.
    pub fn bbox(&self) -> BBox {
        let s = &self.state;
        let (w, h) = (s[2].max(MIN_SIZE), s[3].max(MIN_SIZE));
        BBox::new((s[0] - w / 2.0) as f32, (s[1] - h / 2.0) as f32, w as f32, h as f32)
    }

    /// The centre's velocity in pixels per second.
    pub fn velocity(&self) -> (f32, f32) {
        (self.state[4] as f32, self.state[5] as f32)
    }

    /// Widths scale the x noises, heights the y ones.
    fn sizes(&self) -> [f64; 4] {
        let (w, h) = (self.state[2].max(MIN_SIZE), self.state[3].max(MIN_SIZE));
        [w, h, w, h]
    }

    /// A shrinking prediction stops at the smallest size instead of
    /// turning inside out.
    fn keep_size_positive(&mut self) {
        for axis in 2..4 {
            if self.state[axis] < MIN_SIZE {
                self.state[axis] = MIN_SIZE;
                self.state[axis + 4] = self.state[axis + 4].max(0.0);
            }
        }
    }
}

fn measure_std(axis: usize) -> f64 {
    if axis % 4 < 2 {
        CENTRE_MEASURE_STD
    } else {
        SIZE_MEASURE_STD
    }
}

/// `[cx, cy, w, h]` of a box that has area and finite fields.
fn measurement(bbox: &BBox) -> Option<Measurement> {
    let (cx, cy) = bbox.centre();
    let values = [cx, cy, bbox.w, bbox.h].map(f64::from);
    let usable = values.iter().all(|v| v.is_finite()) && bbox.w > 0.0 && bbox.h > 0.0;
    usable.then(|| Measurement::from(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: f64 = 0.04;

    fn moving_box(t: f64) -> BBox {
        BBox::new((50.0 + 250.0 * t) as f32, (200.0 - 40.0 * t) as f32, 100.0, 60.0)
    }

    #[test]
    fn learns_the_velocity_in_pixels_per_second_whatever_the_step() {
        let mut filter = KalmanBox::new(moving_box(0.0)).expect("a valid box");
        let mut t = 0.0;
        for step in 1..60 {
            // Every fifth step drops two frames.
            let dt = if step % 5 == 0 { 3.0 * FRAME } else { FRAME };
            t += dt;
            filter.predict(dt);
            filter.update(moving_box(t));
        }
        let (vx, vy) = filter.velocity();
        assert!((vx - 250.0).abs() < 5.0 && (vy + 40.0).abs() < 5.0, "velocity ({vx}, {vy})");
        let (cx, cy) = filter.bbox().centre();
        let (tx, ty) = moving_box(t).centre();
        assert!((cx - tx).abs() < 1.0 && (cy - ty).abs() < 1.0, "centre ({cx}, {cy}) vs ({tx}, {ty})");

        // Predicting carries the box on at that velocity.
        filter.predict(0.4);
        let (px, _) = filter.bbox().centre();
        assert!((px - (tx + 100.0)).abs() < 3.0, "predicted x {px}, expected {}", tx + 100.0);
    }

    #[test]
    fn smooths_a_jittering_region() {
        let still = BBox::new(300.0, 100.0, 120.0, 80.0);
        let mut filter = KalmanBox::new(still).expect("a valid box");
        let mut rng = fastrand::Rng::with_seed(7);
        let mut worst_raw: f32 = 0.0;
        for _ in 0..100 {
            let measured = BBox::new(still.x + rng.f32() * 8.0 - 4.0, still.y, still.w, still.h);
            worst_raw = worst_raw.max((measured.x - still.x).abs());
            filter.predict(FRAME);
            filter.update(measured);
        }
        let settled = (filter.bbox().x - still.x).abs();
        assert!(settled < 1.5 && settled < worst_raw, "filtered x off by {settled}");
        assert!(filter.velocity().0.abs() < 20.0, "velocity {:?}", filter.velocity());
    }

    #[test]
    fn damping_slows_the_prediction() {
        let mut filter = KalmanBox::new(moving_box(0.0)).expect("a valid box");
        for step in 1..30 {
            filter.predict(FRAME);
            filter.update(moving_box(f64::from(step) * FRAME));
        }
        let before = filter.velocity().0;
        filter.damp_velocity(0.5);
        assert!((filter.velocity().0 - before * 0.5).abs() < 1e-3);
        let x = filter.bbox().x;
        filter.predict(1.0);
        assert!((filter.bbox().x - x - before * 0.5).abs() < 1.0);
        // Out-of-range factors are refused.
        filter.damp_velocity(f64::NAN);
        filter.damp_velocity(2.0);
        assert!((filter.velocity().0 - before * 0.5).abs() < 1e-3);
    }

    #[test]
    fn refuses_boxes_and_steps_it_cannot_use() {
        assert!(KalmanBox::new(BBox::new(0.0, 0.0, 0.0, 10.0)).is_none());
        assert!(KalmanBox::new(BBox::new(f32::NAN, 0.0, 10.0, 10.0)).is_none());
        assert!(KalmanBox::new(BBox::new(0.0, 0.0, 10.0, f32::INFINITY)).is_none());
        let start = BBox::new(10.0, 20.0, 30.0, 40.0);
        let mut filter = KalmanBox::new(start).expect("a valid box");
        filter.update(BBox::new(f32::NAN, 0.0, 30.0, 40.0));
        filter.update(BBox::new(500.0, 0.0, -3.0, 40.0));
        filter.predict(f64::NAN);
        filter.predict(-1.0);
        filter.predict(f64::INFINITY);
        assert_eq!(filter.bbox(), start);
    }

    #[test]
    fn a_shrinking_prediction_keeps_a_positive_size() {
        let mut filter = KalmanBox::new(BBox::new(0.0, 0.0, 100.0, 50.0)).expect("a valid box");
        for (step, w) in [80.0, 60.0, 40.0, 20.0].into_iter().enumerate() {
            filter.predict(FRAME);
            filter.update(BBox::new(0.0, 0.0, w, 50.0 - step as f32));
        }
        filter.predict(10.0);
        let b = filter.bbox();
        assert!(b.w >= 1.0 && b.h >= 1.0 && b.w.is_finite(), "{b:?}");
    }
}
