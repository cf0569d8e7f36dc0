//! Classification, and nothing else: what a model needs ([`spec`]), how a
//! region becomes its input tensor ([`preprocess`]), the ONNX Runtime
//! session ([`classifier`]), how labels become road classes ([`taxonomy`]),
//! and finding the ONNX Runtime library ([`runtime`]). Imports no feature.

pub mod classifier;
pub mod preprocess;
pub mod runtime;
pub mod spec;
pub mod taxonomy;

pub use crate::wire::model::{ActiveModel, ModelIdentity, RegionPrediction, TopK};
pub use classifier::{Classifier, ModelError};
pub use spec::ModelSpec;
