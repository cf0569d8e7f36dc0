//! From a model's class probabilities to a road class (car, van, truck, ...).
//!
//! The mapping is data (`models/road_taxonomy.toml`). The rule: sum the
//! probability of every label that belongs to each road class; if all vehicle
//! classes together hold less than `min_vehicle_score`, the region is `none`,
//! else it is the road class with the largest sum. Summing makes the answer
//! robust to the model spreading one vehicle over near-synonyms (pickup, jeep,
//! minivan).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The class reported when a region holds no vehicle.
pub const NO_VEHICLE: &str = "none";

/// Why a road taxonomy file cannot be used with the model; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TaxonomyError {
    #[error("cannot read road taxonomy {}: {source}", path.display())]
    Read { path: PathBuf, #[source] source: std::io::Error },
    #[error("road taxonomy {}: {}", path.display(), source.to_string().trim_end())]
    Toml { path: PathBuf, #[source] source: toml::de::Error },
    #[error("road taxonomy {}: `{NO_VEHICLE}` is implied; do not list it", path.display())]
    ListsNone { path: PathBuf },
    /// The taxonomy was written for a model with more labels.
    #[error("road taxonomy {}: class `{class}` lists label {index}, but the model has {labels} labels", path.display())]
    NoSuchLabel { path: PathBuf, class: String, index: usize, labels: usize },
    #[error("road taxonomy {}: label {index} is listed under both `{first}` and `{second}`", path.display())]
    LabelTwice { path: PathBuf, index: usize, first: String, second: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaxonomyFile {
    min_vehicle_score: f32,
    classes: BTreeMap<String, Vec<usize>>,
}

#[derive(Debug, Clone)]
pub struct RoadTaxonomy {
    min_vehicle_score: f32,
    /// Road class names, sorted by name.
    classes: Vec<String>,
    /// For each model label index, the road class it belongs to.
    class_of_label: Vec<Option<usize>>,
}

impl RoadTaxonomy {
    pub fn load(path: &Path, label_count: usize) -> Result<RoadTaxonomy, TaxonomyError> {
        let text = crate::infer::spec::read_text(path).map_err(|source| TaxonomyError::Read { path: path.to_path_buf(), source })?;
        let file: TaxonomyFile = toml::from_str(&text).map_err(|source| TaxonomyError::Toml { path: path.to_path_buf(), source })?;
        let mut class_of_label = vec![None; label_count];
        let mut classes = Vec::new();
        for (name, indices) in file.classes {
            if name == NO_VEHICLE {
                return Err(TaxonomyError::ListsNone { path: path.to_path_buf() });
            }
            let class = classes.len();
            classes.push(name.clone());
            for index in indices {
                let slot = class_of_label.get_mut(index).ok_or_else(|| TaxonomyError::NoSuchLabel {
                    path: path.to_path_buf(),
                    class: name.clone(),
                    index,
                    labels: label_count,
                })?;
                if let Some(other) = slot.replace(class) {
                    return Err(TaxonomyError::LabelTwice { path: path.to_path_buf(), index, first: classes[other].clone(), second: name });
                }
            }
        }
        Ok(RoadTaxonomy { min_vehicle_score: file.min_vehicle_score, classes, class_of_label })
    }

    /// Road class and its score for one region's probabilities.
    pub fn classify(&self, probabilities: &[f32]) -> (&str, f32) {
        let sums = self.sums(probabilities);
        let vehicle: f32 = sums.iter().sum();
        let best = sums.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1));
        match best {
            Some((c, &score)) if vehicle >= self.min_vehicle_score => (&self.classes[c], score),
            _ => (NO_VEHICLE, 1.0 - vehicle),
        }
    }

    /// Each road class's probability (`none` left out): what a tracked
    /// vehicle's frames vote with.
    pub fn scores(&self, probabilities: &[f32]) -> Vec<(String, f32)> {
        self.classes.iter().cloned().zip(self.sums(probabilities)).collect()
    }

    /// Below this, the vehicle classes together say `none`.
    pub fn min_vehicle_score(&self) -> f32 {
        self.min_vehicle_score
    }

    fn sums(&self, probabilities: &[f32]) -> Vec<f32> {
        let mut sums = vec![0f32; self.classes.len()];
        for (p, class) in probabilities.iter().zip(&self.class_of_label) {
            if let Some(c) = class {
                sums[*c] += p;
            }
        }
        sums
    }

    pub fn class_names(&self) -> impl Iterator<Item = &str> {
        self.classes.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taxonomy(min: f32) -> RoadTaxonomy {
        let dir = std::env::temp_dir().join(format!("taxonomy-test-{}-{min}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.toml");
        std::fs::write(&path, format!("min_vehicle_score = {min}\n[classes]\ncar = [0, 1]\ntruck = [2]\n")).unwrap();
        RoadTaxonomy::load(&path, 5).unwrap()
    }

    #[test]
    fn near_synonyms_add_up_for_their_road_class() {
        // truck holds the top label (0.3) but car's two labels together hold more.
        let t = taxonomy(0.25);
        let (class, score) = t.classify(&[0.2, 0.2, 0.3, 0.2, 0.1]);
        assert_eq!(class, "car");
        assert!((score - 0.4).abs() < 1e-6);
    }

    #[test]
    fn too_little_vehicle_mass_is_none() {
        let t = taxonomy(0.5);
        let (class, score) = t.classify(&[0.1, 0.1, 0.1, 0.6, 0.1]);
        assert_eq!(class, NO_VEHICLE);
        assert!((score - 0.7).abs() < 1e-6);
    }

    #[test]
    fn a_taxonomy_for_a_bigger_model_or_listing_none_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "min_vehicle_score = 0.5\n[classes]\ncar = [0, 7]\n").unwrap();
        let error = RoadTaxonomy::load(&path, 5).unwrap_err();
        assert!(matches!(error, TaxonomyError::NoSuchLabel { index: 7, labels: 5, .. }), "{error:?}");
        assert!(error.to_string().ends_with("class `car` lists label 7, but the model has 5 labels"), "{error}");
        std::fs::write(&path, "min_vehicle_score = 0.5\n[classes]\nnone = [0]\n").unwrap();
        assert!(matches!(RoadTaxonomy::load(&path, 5), Err(TaxonomyError::ListsNone { .. })));
    }

    #[test]
    fn the_bundled_taxonomy_loads_and_maps_known_labels() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/road_taxonomy.toml");
        let t = RoadTaxonomy::load(&path, 1000).unwrap();
        let mut probs = vec![0.0; 1000];
        probs[665] = 0.9; // moped
        assert_eq!(t.classify(&probs).0, "motorcycle");
        probs[665] = 0.0;
        probs[654] = 0.9; // minibus
        assert_eq!(t.classify(&probs).0, "van");
        for class in ["car", "van", "truck", "bus", "motorcycle", "bicycle"] {
            assert!(t.class_names().any(|c| c == class), "{class} missing");
        }
    }
}
