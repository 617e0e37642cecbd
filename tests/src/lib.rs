//! Support code shared by herd's integration and end-to-end tests: throwaway
//! network namespaces, child processes that die with the test, the location
//! of the `herd` binary, and checks for the tools a test needs.
//!
//! Tests that need root, QEMU or Docker never skip themselves: [`require`]
//! fails them with a message that says what to install.

pub mod bin;
pub mod lab;
pub mod linearizability;
pub mod netns;
pub mod process;
pub mod require;
pub mod robustness;
pub mod store;
pub mod wait;
