//! What herd's tests share, whatever they test: throwaway network
//! namespaces, child processes that die with the test, the location of the
//! `herd` binary, deadlines for polling, a loopback container registry and
//! a private dockerd, and checks for the tools a test needs. It depends on
//! no herd crate, so a crate's own tests can use it without building the
//! rest of the workspace.
//!
//! Tests that need root, QEMU or Docker never skip themselves: [`require`]
//! fails them with a message that says what to install.

pub mod bin;
pub mod netns;
pub mod process;
pub mod registry;
pub mod require;
pub mod wait;
