//! Plane geometry for lanes, counting lines and the ground plane: points,
//! polygons, segments, and the homography from image pixels to metres.
//! Here (not in the tracker) because the config checks its shapes too.

use nalgebra::{SMatrix, SVector};

/// `[x, y]`: pixels on the image, metres on the ground.
pub type Point = [f64; 2];

/// Twice the signed area of the triangle `a b c`: positive when `c` is on
/// the right of `a → b` for someone looking from `a` toward `b` on the
/// screen (whose y axis points down).
pub fn cross(a: Point, b: Point, c: Point) -> f64 {
    (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
}

/// Is `p` inside the polygon (even-odd rule; a point on an edge may fall either way)?
pub fn polygon_contains(polygon: &[Point], p: Point) -> bool {
    let mut inside = false;
    let mut j = polygon.len().wrapping_sub(1);
    for i in 0..polygon.len() {
        let (a, b) = (polygon[i], polygon[j]);
        if (a[1] > p[1]) != (b[1] > p[1]) {
            let x = a[0] + (p[1] - a[1]) * (b[0] - a[0]) / (b[1] - a[1]);
            if p[0] < x {
                inside = !inside;
            }
        }
        j = i;
    }
    inside
}

/// Do the closed segments `a b` and `c d` share a point?
pub fn segments_meet(a: Point, b: Point, c: Point, d: Point) -> bool {
    let (d1, d2) = (cross(c, d, a), cross(c, d, b));
    let (d3, d4) = (cross(a, b, c), cross(a, b, d));
    if ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0)) && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0)) {
        return true;
    }
    let on = |p: Point, q: Point, r: Point| {
        cross(p, q, r) == 0.0 && r[0] >= p[0].min(q[0]) && r[0] <= p[0].max(q[0]) && r[1] >= p[1].min(q[1]) && r[1] <= p[1].max(q[1])
    };
    on(c, d, a) || on(c, d, b) || on(a, b, c) || on(a, b, d)
}

/// Why a polygon cannot be a lane.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolygonError {
    #[error("has {0} points: a polygon needs at least 3")]
    TooFewPoints(usize),
    #[error("has no area: its points lie on one line")]
    NoArea,
    #[error("crosses itself (edge {0} meets edge {1}, counting from 0): list the corners in order around the area")]
    SelfCrossing(usize, usize),
}

/// A lane's polygon must be simple: 3 or more corners, an area, and no
/// edge meeting another except its neighbours at their shared corner.
pub fn check_polygon(polygon: &[Point]) -> Result<(), PolygonError> {
    let n = polygon.len();
    if n < 3 {
        return Err(PolygonError::TooFewPoints(n));
    }
    for i in 0..n {
        for j in (i + 1)..n {
            let neighbours = j == i + 1 || (i == 0 && j == n - 1);
            if neighbours {
                continue;
            }
            let (a, b) = (polygon[i], polygon[(i + 1) % n]);
            let (c, d) = (polygon[j], polygon[(j + 1) % n]);
            if segments_meet(a, b, c, d) {
                return Err(PolygonError::SelfCrossing(i, j));
            }
        }
    }
    let area: f64 = (0..n).map(|i| cross([0.0, 0.0], polygon[i], polygon[(i + 1) % n])).sum();
    if area.abs() < 1e-9 {
        return Err(PolygonError::NoArea);
    }
    Ok(())
}

/// Maps image pixels to ground metres: the plane projective map fixed by
/// four point pairs (no three of either four on one line).
#[derive(Debug, Clone, PartialEq)]
pub struct Homography(SMatrix<f64, 3, 3>);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HomographyError {
    #[error("points {0}, {1} and {2} (counting from 0) lie on one line: pick four points, no three in a row, such as the corners of a stretch of lane")]
    Collinear(usize, usize, usize),
    #[error("has a point that is not a finite number")]
    NotFinite,
    #[error("cannot be solved for these points: check that image point i and ground point i are the same spot")]
    Singular,
}

impl Homography {
    /// From the four `image` points and the same spots' `ground` positions.
    pub fn from_points(image: &[Point; 4], ground: &[Point; 4]) -> Result<Homography, HomographyError> {
        check_four_points(image)?;
        check_four_points(ground)?;
        // Direct linear transform with h33 = 1: two equations per pair.
        let mut a = SMatrix::<f64, 8, 8>::zeros();
        let mut b = SVector::<f64, 8>::zeros();
        for i in 0..4 {
            let ([x, y], [u, v]) = (image[i], ground[i]);
            let r = 2 * i;
            a.row_mut(r).copy_from_slice(&[x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y]);
            a.row_mut(r + 1).copy_from_slice(&[0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y]);
            b[r] = u;
            b[r + 1] = v;
        }
        let h = a.lu().solve(&b).ok_or(HomographyError::Singular)?;
        if h.iter().any(|v| !v.is_finite()) {
            return Err(HomographyError::Singular);
        }
        Ok(Homography(SMatrix::<f64, 3, 3>::new(h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], 1.0)))
    }

    /// Whether every point is on one side of the horizon, clear of it: the
    /// map is then continuous over their convex hull (no speed jumps to
    /// infinity between them).
    pub fn holds_over(&self, points: &[Point]) -> bool {
        let w = |p: &Point| self.0[(2, 0)] * p[0] + self.0[(2, 1)] * p[1] + self.0[(2, 2)];
        let ws: Vec<f64> = points.iter().map(w).collect();
        let scale = ws.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        scale > 0.0 && (ws.iter().all(|v| *v > 1e-3 * scale) || ws.iter().all(|v| *v < -1e-3 * scale))
    }

    /// The ground position of image point `p`, or None beyond the horizon.
    pub fn apply(&self, p: Point) -> Option<Point> {
        let v = self.0 * SVector::<f64, 3>::new(p[0], p[1], 1.0);
        if v[2].abs() < 1e-12 {
            return None;
        }
        let out = [v[0] / v[2], v[1] / v[2]];
        out.iter().all(|c| c.is_finite()).then_some(out)
    }
}

/// Four points fit to fix a homography: finite, no three on one line.
pub fn check_four_points(points: &[Point; 4]) -> Result<(), HomographyError> {
    if points.iter().flatten().any(|c| !c.is_finite()) {
        return Err(HomographyError::NotFinite);
    }
    // Relative to the points' spread, so pixels and metres are judged alike.
    let spread = points.iter().flat_map(|p| points.iter().map(move |q| (p[0] - q[0]).hypot(p[1] - q[1]))).fold(0.0, f64::max);
    for (i, j, k) in [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)] {
        if cross(points[i], points[j], points[k]).abs() <= 1e-6 * spread * spread {
            return Err(HomographyError::Collinear(i, j, k));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQUARE: [Point; 4] = [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]];

    #[test]
    fn a_point_is_inside_a_square_and_outside_beyond_it() {
        assert!(polygon_contains(&SQUARE, [5.0, 5.0]));
        assert!(!polygon_contains(&SQUARE, [15.0, 5.0]));
        assert!(!polygon_contains(&SQUARE, [5.0, -1.0]));
    }

    #[test]
    fn lanes_must_be_simple_polygons() {
        assert_eq!(check_polygon(&SQUARE), Ok(()));
        assert_eq!(check_polygon(&SQUARE[..2]), Err(PolygonError::TooFewPoints(2)));
        assert_eq!(check_polygon(&[[0.0, 0.0], [5.0, 5.0], [10.0, 10.0]]), Err(PolygonError::NoArea));
        // A bow tie: corners out of order.
        let bow_tie = [[0.0, 0.0], [10.0, 10.0], [10.0, 0.0], [0.0, 10.0]];
        assert_eq!(check_polygon(&bow_tie), Err(PolygonError::SelfCrossing(0, 2)));
    }

    #[test]
    fn a_homography_maps_its_own_points_and_a_perspective_in_between() {
        // A trapezoid on the image (a lane narrowing to the horizon) is a 3.5 m × 30 m rectangle on the ground.
        let image = [[400.0, 500.0], [600.0, 500.0], [560.0, 200.0], [440.0, 200.0]];
        let ground = [[0.0, 0.0], [3.5, 0.0], [3.5, 30.0], [0.0, 30.0]];
        let h = Homography::from_points(&image, &ground).unwrap();
        for (p, g) in image.iter().zip(&ground) {
            let m = h.apply(*p).unwrap();
            assert!((m[0] - g[0]).abs() < 1e-6 && (m[1] - g[1]).abs() < 1e-6, "{p:?} → {m:?}, expected {g:?}");
        }
        // Perspective: the far half of the image covers more road than the near half.
        let mid = h.apply([500.0, 350.0]).unwrap();
        assert!((mid[1] - 11.25).abs() < 1e-6 && (mid[0] - 1.75).abs() < 1e-6, "{mid:?}");
    }

    #[test]
    fn a_horizon_between_the_points_is_found() {
        // A strong perspective: the far edge (y = 200) is near the horizon.
        let image = [[400.0, 500.0], [600.0, 500.0], [505.0, 200.0], [495.0, 200.0]];
        let ground = [[0.0, 0.0], [3.5, 0.0], [3.5, 30.0], [0.0, 30.0]];
        let h = Homography::from_points(&image, &ground).unwrap();
        assert!(h.holds_over(&image));
        // Higher up the image than the horizon: beyond it.
        assert!(!h.holds_over(&[[500.0, 500.0], [500.0, 100.0]]));
    }

    #[test]
    fn collinear_or_non_finite_points_are_refused() {
        let line = [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 5.0]];
        assert_eq!(Homography::from_points(&line, &SQUARE), Err(HomographyError::Collinear(0, 1, 2)));
        assert_eq!(Homography::from_points(&SQUARE, &line), Err(HomographyError::Collinear(0, 1, 2)));
        let nan = [[f64::NAN, 0.0], [1.0, 0.0], [2.0, 3.0], [0.0, 5.0]];
        assert_eq!(Homography::from_points(&nan, &SQUARE), Err(HomographyError::NotFinite));
    }
}
