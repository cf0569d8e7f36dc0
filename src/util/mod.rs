//! Small shared pieces that know nothing of the agent's features: files
//! ([`fs`]), one shutdown signal ([`shutdown`]), and progress tracking for
//! the watchdog ([`health`]), plane geometry for lanes and the ground
//! ([`plane`]), and rate limits for repeated log lines
//! ([`throttle`]).

pub mod fs;
pub mod health;
pub mod plane;
pub mod shutdown;
pub mod throttle;
