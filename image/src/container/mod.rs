//! Container images from Debian packages, without the internet: a recipe
//! resolved by the OS pipeline's resolver into one reproducible layer (and
//! the host files it adds into a second),
//! written as an OCI image layout, and pushed to a registry over the
//! distribution API v2.

pub mod added;
pub mod build;
pub mod layer;
pub mod layout;
pub mod push;
pub mod recipe;
pub mod reference;
pub mod tree;

pub use added::Added;
pub use build::{Built, ContainerError, build};
pub use push::{PushError, Pushed, push};
pub use recipe::{PAUSE_IMAGE, Recipe};
pub use reference::Reference;
