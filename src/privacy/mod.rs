//! What no picture leaving the device may show. Privacy masks: areas of a
//! camera's image filled solid black in every picture that goes off the
//! device (samples, snapshots, the installer's page), and, where the
//! operator asks, in the frame before region finding and classification.
//!
//! Pixels leave in three places, and each hides the masks itself, on the
//! copy it sends: a region's sample crop (`monitor::samples`), a vehicle's
//! best view (`pipeline::vehicles`, when it is kept) and the installer's
//! pictures (`view::draw`). A crop knows where it was in the frame, so the
//! masks are drawn on it shifted; a frame nobody sends is never copied.

pub mod masks;

pub use masks::PrivacyMasks;
