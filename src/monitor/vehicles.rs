//! Recent vehicles of tracked cameras, by track, so that per-vehicle
//! feedback (`{"track": …, "class": …}`) finds what was said of each. A
//! loop detector or weigh-in-motion station reports within seconds, an
//! operator's review later; the book keeps the latest vehicles and forgets
//! the oldest first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::infer::ModelIdentity;

/// Vehicles remembered. Each costs ~110 bytes (see [`RememberedVehicle`]),
/// so ~2.2 MB in all (3.6 MB with the longest ids): on a busy four-lane
/// road (~8000 vehicles an hour), the last 2½ hours.
pub const REMEMBER_VEHICLES: usize = 20_000;

/// What the book keeps of one vehicle: 48 bytes inline, its track id on the
/// heap (16 bytes + its length, ≤ 85; shared with the index) and its index
/// entry (~32 bytes). Camera ids and models are shared by all vehicles.
#[derive(Debug, Clone)]
pub struct RememberedVehicle {
    pub track: Arc<str>,
    pub camera: Arc<str>,
    /// The model that classified it (last, if it changed while in view).
    pub model: Arc<ModelIdentity>,
    /// Its consensus class, as an index into the label book's classes.
    pub class: u8,
}

pub struct VehicleBook {
    /// Oldest first; `order[i]` arrived as number `first + i`.
    order: VecDeque<RememberedVehicle>,
    first: u64,
    /// Track → arrival number of its latest vehicle.
    by_track: HashMap<Arc<str>, u64>,
    capacity: usize,
}

impl VehicleBook {
    pub fn new(capacity: usize) -> VehicleBook {
        VehicleBook { order: VecDeque::new(), first: 0, by_track: HashMap::new(), capacity: capacity.max(1) }
    }

    /// A track id seen again (ids are unique per device, unless its counter
    /// was lost with state_dir) names the newer vehicle from now on.
    pub fn remember(&mut self, vehicle: RememberedVehicle) {
        let arrival = self.first + self.order.len() as u64;
        self.by_track.insert(vehicle.track.clone(), arrival);
        self.order.push_back(vehicle);
        while self.order.len() > self.capacity {
            let gone = self.order.pop_front().expect("over capacity, so not empty");
            if self.by_track.get(&gone.track) == Some(&self.first) {
                self.by_track.remove(&gone.track);
            }
            self.first += 1;
        }
    }

    pub fn find(&self, track: &str) -> Option<&RememberedVehicle> {
        let arrival = *self.by_track.get(track)?;
        self.order.get((arrival - self.first) as usize)
    }

    /// The oldest vehicle remembered: what a rejection tells a late sender.
    pub fn oldest(&self) -> Option<&str> {
        self.order.front().map(|v| &*v.track)
    }

    /// Distinct tracks remembered.
    pub fn len(&self) -> usize {
        self.by_track.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_track.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vehicle(track: &str, class: u8) -> RememberedVehicle {
        let model = Arc::new(ModelIdentity { name: "m".into(), version: "1".into(), sha256: "s".into() });
        RememberedVehicle { track: Arc::from(track), camera: Arc::from("road"), model, class }
    }

    #[test]
    fn keeps_the_latest_vehicles_and_forgets_the_oldest_first() {
        let mut book = VehicleBook::new(3);
        assert!(book.is_empty() && book.oldest().is_none());
        for n in 1..=5 {
            book.remember(vehicle(&format!("road-{n}"), n));
        }
        assert_eq!(book.len(), 3);
        assert!(book.find("road-1").is_none() && book.find("road-2").is_none());
        assert_eq!(book.find("road-3").map(|v| v.class), Some(3));
        assert_eq!(book.find("road-5").map(|v| v.class), Some(5));
        assert_eq!(book.oldest(), Some("road-3"));
        assert!(book.find("road-6").is_none());
    }

    #[test]
    fn a_repeated_track_names_the_newer_vehicle_and_outlives_its_older_entry() {
        let mut book = VehicleBook::new(3);
        book.remember(vehicle("road-1", 1));
        book.remember(vehicle("road-2", 2));
        book.remember(vehicle("road-1", 9));
        assert_eq!(book.find("road-1").map(|v| v.class), Some(9));
        // The older road-1 leaves the book; the newer stays findable.
        book.remember(vehicle("road-3", 3));
        assert_eq!(book.find("road-1").map(|v| v.class), Some(9));
        assert_eq!(book.len(), 3);
        book.remember(vehicle("road-4", 4));
        book.remember(vehicle("road-5", 5));
        assert!(book.find("road-1").is_none(), "forgotten once its newer entry left too");
        assert_eq!(book.len(), 3);
    }
}
