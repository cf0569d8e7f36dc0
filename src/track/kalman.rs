//! A constant-velocity Kalman filter on a box (to be written).
