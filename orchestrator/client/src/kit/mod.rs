//! The controller kit: every role is a controller written with it (the
//! shape of kube-runtime's `Controller`).
//!
//! - [`watcher`]: lists a scope of the store at a revision, watches from
//!   the next revision, re-lists when that revision was compacted away,
//!   and rides through store outages and leader changes by resuming.
//! - [`Cache`]: what the watcher saw, kept in memory — controllers read
//!   the cache, never the whole tree per event (fleet's scaling wall).
//! - [`Controller`]: reconciles each object by name, level-triggered: a
//!   change (or a mapped change of another kind) queues the name; the
//!   reconciler compares desired with actual and acts; it asks to be
//!   requeued after a delay, and errors requeue with exponential backoff.
//!   One name is never reconciled twice at once.
//! - [`elected`]: runs work only while this process holds a store
//!   election, for the controllers that run once per cluster.
//!
//! Contracts a reconciler can rely on: it sees an object only after the
//! first complete listing; it is called again whenever the object (or
//! something mapped to it) changes after the call began; a deleted object
//! is reconciled once more with `object: None`; nothing is reconciled after
//! the cancellation token fires (a running call is awaited, then dropped
//! after a grace period).

mod backoff;
mod cache;
mod controller;
pub mod elected;
mod queue;
mod resource;
pub mod watcher;

pub use backoff::Backoff;
pub use cache::Cache;
pub use controller::{Action, Controller, Request};
pub use elected::{fence, run_elected, run_elected_fenced};
pub use resource::{DecodeError, ListError, Object, Resource, Scope, list};
pub use watcher::{Event, Watcher};
