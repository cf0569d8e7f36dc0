//! Boxes, points, lanes, lines and the ground plane, in frame pixels.

/// An axis-aligned box in frame pixels: top-left corner and size.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl BBox {
    pub fn new(x: f32, y: f32, w: f32, h: f32) -> BBox {
        BBox { x, y, w, h }
    }

    pub fn area(&self) -> f32 {
        self.w.max(0.0) * self.h.max(0.0)
    }

    pub fn right(&self) -> f32 {
        self.x + self.w
    }

    pub fn bottom(&self) -> f32 {
        self.y + self.h
    }

    pub fn centre(&self) -> (f32, f32) {
        (self.x + self.w / 2.0, self.y + self.h / 2.0)
    }

    /// Where the vehicle meets the road: what lanes and lines are judged by.
    pub fn bottom_centre(&self) -> (f32, f32) {
        (self.x + self.w / 2.0, self.y + self.h)
    }

    pub fn intersection(&self, other: &BBox) -> f32 {
        let w = self.right().min(other.right()) - self.x.max(other.x);
        let h = self.bottom().min(other.bottom()) - self.y.max(other.y);
        w.max(0.0) * h.max(0.0)
    }

    /// Intersection over union, 0 for boxes without area.
    pub fn iou(&self, other: &BBox) -> f32 {
        let inter = self.intersection(other);
        let union = self.area() + other.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }
}

// The tracker's box tests.
impl BBox {
    /// Finite, with area: a region the tracker can use.
    pub fn is_usable(&self) -> bool {
        [self.x, self.y, self.w, self.h].iter().all(|v| v.is_finite()) && self.w > 0.0 && self.h > 0.0
    }

    /// The smallest box holding both.
    pub fn union(&self, other: &BBox) -> BBox {
        let (x, y) = (self.x.min(other.x), self.y.min(other.y));
        BBox::new(x, y, self.right().max(other.right()) - x, self.bottom().max(other.bottom()) - y)
    }

    /// The share of this box's area that lies inside `other`, 0 without area.
    pub fn fraction_inside(&self, other: &BBox) -> f32 {
        let area = self.area();
        if area <= 0.0 {
            0.0
        } else {
            self.intersection(other) / area
        }
    }
}
