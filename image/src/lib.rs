//! The image pipeline: spec to read-only A/B OS image, update payloads, Omaha server/client and slot logic.

pub mod cli;
