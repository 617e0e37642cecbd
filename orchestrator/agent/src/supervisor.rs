//! The agent's supervisor: it owns one task per role and one cancellation
//! token that every role obeys. The binary's signal handler cancels the
//! token (SIGTERM/SIGINT); a role that ends or fails on its own cancels it
//! too, so the agent never runs with a role missing. Stopping gives the
//! roles a grace period, then aborts them.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long roles get to stop after cancellation.
const GRACE: Duration = Duration::from_secs(10);

pub struct Supervisor {
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
    cancel: CancellationToken,
}

impl Supervisor {
    /// A supervisor stopping on `cancel` (or on its first role's end).
    pub fn new(cancel: CancellationToken) -> Supervisor {
        Supervisor {
            tasks: JoinSet::new(),
            cancel,
        }
    }

    /// The token roles stop on.
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Runs `role` until it ends; it must return once the token fires.
    pub fn spawn(
        &mut self,
        role: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        tracing::debug!(role, "starting role");
        self.tasks.spawn(async move { (role, task.await) });
    }

    /// Runs until cancelled or until a role ends; then stops every role.
    /// A role that ended on its own is an error (it names the role).
    pub async fn run(mut self) -> anyhow::Result<()> {
        // Biased: a role that ends because the token fired is not a role
        // that stopped on its own.
        let first = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => {
                tracing::info!("shutting down");
                None
            }
            joined = self.tasks.join_next() => joined,
        };
        self.cancel.cancel();
        let mut result = match first {
            Some(Ok((role, Ok(())))) => Err(anyhow::anyhow!("role {role} stopped unexpectedly")),
            Some(Ok((role, Err(e)))) => Err(e.context(format!("role {role} failed"))),
            Some(Err(e)) => Err(anyhow::anyhow!("a role panicked: {e}")),
            None => Ok(()),
        };
        let drain = async {
            while let Some(joined) = self.tasks.join_next().await {
                match joined {
                    Ok((role, Err(e))) => {
                        tracing::warn!(role, error = %e, "role failed while stopping")
                    }
                    Err(e) if e.is_panic() => {
                        tracing::warn!(error = %e, "a role panicked while stopping")
                    }
                    _ => {}
                }
            }
        };
        if tokio::time::timeout(GRACE, drain).await.is_err() {
            tracing::warn!("roles did not stop within {GRACE:?}; aborting them");
            self.tasks.abort_all();
            if result.is_ok() {
                result = Err(anyhow::anyhow!("roles did not stop in time"));
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_role_that_fails_stops_the_others_and_is_named() {
        let mut s = Supervisor::new(CancellationToken::new());
        let token = s.token();
        s.spawn("steady", async move {
            token.cancelled().await;
            Ok(())
        });
        s.spawn("flaky", async { Err(anyhow::anyhow!("boom")) });
        let err = s.run().await.unwrap_err();
        assert!(
            format!("{err:#}").contains("role flaky failed: boom"),
            "{err:#}"
        );
    }

    #[tokio::test]
    async fn cancellation_stops_every_role_cleanly() {
        let cancel = CancellationToken::new();
        let mut s = Supervisor::new(cancel.clone());
        for role in ["a", "b"] {
            let token = s.token();
            s.spawn(role, async move {
                token.cancelled().await;
                Ok(())
            });
        }
        cancel.cancel();
        s.run().await.unwrap();
    }
}
