//! Rebooting the machine: flush the filesystems, then `reboot(2)` — what
//! `reboot -f` does; herd's init needs no orderly shutdown (the store's
//! data is fsync'd as it is written). Behind a trait, so tests watch it.

use std::future::Future;
use std::pin::Pin;

pub type RebootFuture<'a> = Pin<Box<dyn Future<Output = std::io::Error> + Send + 'a>>;

/// Reboots; returns only if it could not.
pub trait Rebooter: Send + Sync + 'static {
    fn reboot(&self) -> RebootFuture<'_>;
}

/// The real thing.
pub struct SystemReboot;

impl Rebooter for SystemReboot {
    fn reboot(&self) -> RebootFuture<'_> {
        Box::pin(async {
            tokio::task::spawn_blocking(|| {
                // SAFETY: sync(2) and reboot(2) take no pointers.
                unsafe {
                    libc::sync();
                    libc::reboot(libc::RB_AUTOBOOT);
                }
                std::io::Error::last_os_error()
            })
            .await
            .unwrap_or_else(|e| std::io::Error::other(e.to_string()))
        })
    }
}
