//! The models, and nothing else: what a classifier needs ([`spec`]), how a
//! region becomes its input tensor ([`preprocess`]), the ONNX Runtime
//! session ([`classifier`]), a detector's spec and session
//! ([`detector_spec`], [`detector`]), how labels become road classes ([`taxonomy`]),
//! and finding the ONNX Runtime library ([`runtime`]). Imports no feature.

pub mod classifier;
pub mod detector;
pub mod detector_spec;
pub mod preprocess;
pub mod runtime;
pub mod spec;
pub mod taxonomy;

pub use crate::wire::model::{ActiveModel, ModelIdentity, RegionPrediction, TopK};
pub use classifier::{Classifier, ModelError};
pub use detector::{Detection, Detector};
pub use spec::ModelSpec;
