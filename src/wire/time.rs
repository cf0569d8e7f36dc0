//! The contract's timestamp format.

use std::time::SystemTime;

/// RFC 3339, UTC, millisecond precision.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}
