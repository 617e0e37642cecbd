//! An exec's terminal size: the sizes a client sends (`{"Width":…,
//! "Height":…}`, as kubectl writes them), applied to the exec, and the
//! latest applied again a few times over the next seconds.
//!
//! Why again: dockerd before API 1.42 (Debian 12's 20.10 among them)
//! cannot take a size with the exec, and a resize that reaches
//! containerd's shim before the process's terminal exists is answered
//! with success and dropped (its exec resize returns nil while it has no
//! console), so the size a client sends first, right after the command
//! started, can be lost. The Docker CLI closed the same race by sending
//! the size at creation (ConsoleSize), which these daemons do not know.

use std::time::Duration;

use tokio::sync::mpsc;

use super::docker::Docker;

/// After a size arrives, the pauses before each time it is applied again.
const AGAIN_AFTER: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Size {
    width: u16,
    height: u16,
}

/// The sizes of one exec's terminal. Its task applies them and ends when
/// this is dropped.
pub(crate) struct TerminalSize {
    sizes: mpsc::Sender<Size>,
    exec: String,
}

impl TerminalSize {
    pub(crate) fn new(docker: Docker, exec: String) -> TerminalSize {
        let (sizes, rx) = mpsc::channel(8);
        tokio::spawn(apply(docker, exec.clone(), rx));
        TerminalSize { sizes, exec }
    }

    /// Takes one size as the client wrote it; anything else is logged and
    /// ignored, as is a size that comes while eight wait.
    pub(crate) fn set(&self, json: &[u8]) {
        match serde_json::from_slice::<Size>(json) {
            Ok(size) => {
                let _ = self.sizes.try_send(size);
            }
            Err(e) => {
                tracing::info!(exec = self.exec, error = %e, "a terminal size that does not parse")
            }
        }
    }
}

async fn apply(docker: Docker, exec: String, mut sizes: mpsc::Receiver<Size>) {
    let mut latest: Option<Size> = None;
    let mut again = AGAIN_AFTER.len();
    loop {
        let pause = async {
            match AGAIN_AFTER.get(again) {
                Some(d) if latest.is_some() => tokio::time::sleep(*d).await,
                _ => std::future::pending().await,
            }
        };
        let (size, repeat) = tokio::select! {
            size = sizes.recv() => match size {
                Some(size) => {
                    latest = Some(size);
                    again = 0;
                    (size, false)
                }
                None => return,
            },
            () = pause => {
                again += 1;
                match latest {
                    Some(size) => (size, true),
                    None => continue,
                }
            }
        };
        match docker.resize_exec(&exec, size.width, size.height).await {
            // A command that ended before a repeat cannot be resized.
            Err(e) if repeat => {
                tracing::debug!(exec, error = %e.message(), "resizing the exec's terminal again")
            }
            Err(e) => tracing::info!(exec, error = %e.message(), "resizing the exec's terminal"),
            Ok(()) => {}
        }
    }
}
