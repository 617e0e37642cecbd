//! Running the host tools a build uses (apt, dpkg-deb, mksquashfs, mke2fs, …) with errors that name the command.

use std::process::Command;

/// A host tool that could not be started or exited non-zero.
#[derive(Debug, thiserror::Error)]
#[error("running {command}: {reason}")]
pub struct ToolError {
    pub command: String,
    pub reason: String,
}

/// Runs `cmd` to completion and returns its stdout; a failure carries the
/// command line and the tool's stderr, which is where it says what was wrong.
pub fn run(cmd: &mut Command) -> Result<Vec<u8>, ToolError> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| ToolError {
        command: shown.clone(),
        reason: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(ToolError {
            command: shown,
            reason: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out.stdout)
}
