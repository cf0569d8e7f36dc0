//! The multi-object tracker (to be written).
