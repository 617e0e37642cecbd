//! The facts ([`KindInfo`]) and strategies ([`ApiObject`]) of each kind:
//! where it lives, its defaults, its validation and the status a new
//! object starts with. One file per family of kinds.
//!
//! [`KindInfo`]: super::kind::KindInfo
//! [`ApiObject`]: super::kind::ApiObject

mod cluster;
mod pod;
mod service;
mod workloads;

use super::kind::Column;

const fn col(
    name: &'static str,
    kind: &'static str,
    priority: u8,
    description: &'static str,
) -> Column {
    Column {
        name,
        kind,
        priority,
        description,
    }
}

const NAME: Column = col(
    "Name",
    "string",
    0,
    "Name must be unique within a namespace.",
);
const AGE: Column = col(
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);
