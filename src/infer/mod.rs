//! Classification: what a model needs ([`spec`]), how a region becomes its
//! input tensor ([`preprocess`]), the ONNX Runtime session ([`classifier`]),
//! how labels become road classes ([`taxonomy`]), and the thread that owns
//! the session ([`worker`]).

pub mod classifier;
pub mod preprocess;
pub mod probation;
pub mod spec;
pub mod taxonomy;
pub mod worker;

pub use classifier::{Classifier, ModelError, ModelIdentity, RegionPrediction, TopK};
pub use spec::ModelSpec;

/// The model serving now; the inference thread replaces it when it swaps.
pub type ActiveModel = std::sync::Arc<std::sync::RwLock<ModelIdentity>>;
