//! The process's one signal handler: SIGTERM and SIGINT cancel a token
//! that every long-running command (the agent, the provisioning server,
//! `herd kv watch`, …) obeys. A second signal exits at once.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// A token cancelled by the first SIGTERM or SIGINT; a second one ends the
/// process with the conventional status (128 + signal).
pub fn shutdown_token() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = term.recv() => libc_code(SignalKind::terminate()),
            _ = int.recv() => libc_code(SignalKind::interrupt()),
        };
        tracing::debug!(signal = first, "stopping");
        cancel.cancel();
        let again = tokio::select! {
            _ = term.recv() => libc_code(SignalKind::terminate()),
            _ = int.recv() => libc_code(SignalKind::interrupt()),
        };
        eprintln!("herd: second signal; exiting now");
        std::process::exit(128 + again);
    });
    Ok(token)
}

fn libc_code(kind: SignalKind) -> i32 {
    kind.as_raw_value()
}
