//! Starting one command of a unit: a clean environment, the unit's user,
//! group and working directory, a session of its own (so a signal to the
//! agent's process group never reaches it), and its cgroup entered
//! before `exec` (so even its first fork is inside).

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Who a command runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
}

/// Everything a command needs besides its argv.
#[derive(Debug, Clone)]
pub struct Context {
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub credentials: Option<Credentials>,
    /// The unit's `cgroup.procs`.
    pub cgroup_procs: PathBuf,
}

/// The default `PATH` of services, as systemd sets it.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Expands `$VAR` (a whole word: split into words) and `${VAR}` (inside a
/// word) from `env`, as systemd does for command lines; `$$` is a `$`.
pub fn expand_vars(argv: &[String], env: &[(String, String)]) -> Vec<String> {
    let get = |k: &str| {
        env.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let mut out = Vec::new();
    for w in argv {
        if let Some(name) = w.strip_prefix('$')
            && !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            out.extend(get(name).split_whitespace().map(str::to_owned));
            continue;
        }
        let mut s = String::new();
        let mut rest = w.as_str();
        while let Some(i) = rest.find('$') {
            s.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(a) = after.strip_prefix('$') {
                s.push('$');
                rest = a;
            } else if let Some(body) = after.strip_prefix('{')
                && let Some(end) = body.find('}')
            {
                s.push_str(get(&body[..end]));
                rest = &body[end + 1..];
            } else {
                s.push('$');
                rest = after;
            }
        }
        s.push_str(rest);
        out.push(s);
    }
    out
}

/// Finds `program` in the `PATH` of `env` unless it is absolute.
pub fn resolve(program: &str, env: &[(String, String)]) -> Option<PathBuf> {
    if program.starts_with('/') {
        return Some(PathBuf::from(program));
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    path.split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// Spawns `argv` (already expanded) with `ctx`; stdout and stderr are
/// piped for the journal.
pub fn spawn(
    argv: &[String],
    argv0: Option<&str>,
    ctx: &Context,
) -> std::io::Result<tokio::process::Child> {
    let program = resolve(&argv[0], &ctx.env).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{}: not found in PATH", argv[0]),
        )
    })?;
    let mut cmd = std::process::Command::new(&program);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(ctx.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&ctx.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(a0) = argv0 {
        cmd.arg0(a0);
    }
    if let Some(c) = ctx.credentials {
        cmd.uid(c.uid).gid(c.gid);
    }
    let procs = CString::new(ctx.cgroup_procs.as_os_str().as_encoded_bytes()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "cgroup path holds a NUL")
    })?;
    // SAFETY: the closure runs between fork and exec and calls only
    // async-signal-safe functions (setsid, open, write, close) on memory
    // allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if !ok {
                return Err(err);
            }
            Ok(())
        });
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(false);
    cmd.spawn()
}

/// Looks up `User=` and `Group=` (names from `/etc/passwd` and
/// `/etc/group`, or numbers). Blocking: call from `spawn_blocking`.
/// Returns the credentials and the user's home directory and shell.
pub fn credentials(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Option<(Credentials, String, String, String)>, String> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let (uid, default_gid, name, home, shell) = match user {
        None => (
            0,
            0,
            "root".to_owned(),
            "/root".to_owned(),
            "/bin/sh".to_owned(),
        ),
        Some(u) => {
            let entry = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 7 && (f[0] == u || f[2] == u));
            match (entry, u.parse::<u32>()) {
                (Some(f), _) => (
                    f[2].parse()
                        .map_err(|_| format!("/etc/passwd has a bad uid for {u}"))?,
                    f[3].parse()
                        .map_err(|_| format!("/etc/passwd has a bad gid for {u}"))?,
                    f[0].to_owned(),
                    f[5].to_owned(),
                    f[6].to_owned(),
                ),
                (None, Ok(n)) => (n, n, u.to_owned(), "/".to_owned(), "/bin/sh".to_owned()),
                (None, Err(_)) => return Err(format!("User={u}: no such user in /etc/passwd")),
            }
        }
    };
    let gid = match group {
        None => default_gid,
        Some(g) => {
            let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
            let entry = groups
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g);
            match (entry, g.parse::<u32>()) {
                (Some(f), _) => f[2]
                    .parse()
                    .map_err(|_| format!("/etc/group has a bad gid for {g}"))?,
                (None, Ok(n)) => n,
                (None, Err(_)) => return Err(format!("Group={g}: no such group in /etc/group")),
            }
        }
    };
    Ok(Some((Credentials { uid, gid }, name, home, shell)))
}

/// Reads an `EnvironmentFile=`: `KEY=VALUE` lines, `#` and `;` comments,
/// optional quotes around values. Blocking.
pub fn environment_file(path: &Path) -> std::io::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            out.push((k.trim().to_owned(), v.to_owned()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_expand_like_systemd() {
        let env = vec![
            ("A".to_owned(), "x y".to_owned()),
            ("B".to_owned(), "b".to_owned()),
        ];
        let argv: Vec<String> = ["/bin/echo", "$A", "pre${B}post", "$$A", "${NONE}", "$"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            expand_vars(&argv, &env),
            ["/bin/echo", "x", "y", "prebpost", "$A", "", "$"]
        );
    }

    #[test]
    fn environment_files_and_users() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("env");
        std::fs::write(&f, "# c\nA=1\nexport B=\"two words\"\n\nC='3'\n").unwrap();
        assert_eq!(
            environment_file(&f).unwrap(),
            [
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "3".into())
            ]
        );
        let (c, name, _, _) = credentials(Some("root"), None).unwrap().unwrap();
        assert_eq!((c.uid, c.gid, name.as_str()), (0, 0, "root"));
        assert_eq!(
            credentials(Some("4242"), Some("4243")).unwrap().unwrap().0,
            Credentials {
                uid: 4242,
                gid: 4243
            }
        );
        assert!(
            credentials(Some("no-such-user-here"), None)
                .unwrap_err()
                .contains("no such user")
        );
        assert!(credentials(None, None).unwrap().is_none());
    }
}
