//! `<root>/fleet/models/<name>` (QoS 1, retained): the trainer's notice that
//! a release is in the registry. Devices only take it as a hint to check
//! the registry's tag; what they install is what the signed record says.

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct ReleaseAnnouncement<'a, Record: Serialize> {
    pub name: &'a str,
    pub version: u64,
    /// The registry repository URL and the tag that now points at the release.
    pub registry: &'a str,
    pub tag: &'a str,
    /// The manifest's digest.
    pub digest: &'a str,
    /// The signed release record, for humans and dashboards.
    pub record: &'a Record,
}
