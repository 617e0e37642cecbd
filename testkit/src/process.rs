//! Child processes owned by a test: killed (with their whole process group)
//! when the guard drops, including when the test panics, and sent SIGKILL by
//! the kernel if the test process itself dies first.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// A running child process that is killed when this guard is dropped.
#[derive(Debug)]
pub struct Guard {
    name: String,
    child: Option<Child>,
}

/// Starts `command` in its own process group, tied to the test's lifetime.
pub fn spawn(name: &str, command: &mut Command) -> Guard {
    // SAFETY: the closure runs between fork and exec and only calls
    // async-signal-safe functions (prctl).
    unsafe {
        command.pre_exec(|| {
            // If the test process dies (even by SIGKILL), take the child along.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.process_group(0);
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name} ({command:?}): {e}"));
    Guard {
        name: name.to_owned(),
        child: Some(child),
    }
}

impl Guard {
    /// The child's process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child present until drop").id()
    }

    /// Sends `signal` to the child's whole process group.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: killpg on a pgid we created; failure (already gone) is fine.
        unsafe {
            libc::killpg(self.pid() as libc::pid_t, signal);
        }
    }

    /// SIGKILLs the process group and reaps the child (a crash, as tests mean it).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: as in `signal`.
            unsafe {
                libc::killpg(child.id() as libc::pid_t, libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit, then SIGKILLs.
    /// Returns the exit status if the process exited by itself.
    pub fn terminate(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: as in `signal`.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        tracing::warn!(name = %self.name, "did not exit after SIGTERM; killing");
        self.child = Some(child);
        self.kill();
        None
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}
