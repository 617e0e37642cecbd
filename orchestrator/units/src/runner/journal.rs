//! A bounded journal per unit on the machine's disk: stdout and stderr
//! lines and the runner's own messages, each with a timestamp, in
//! `<dir>/<unit>/journal.log`, rotated to `journal.log.1` when it passes
//! its size, so a unit never holds more than twice that.

use std::io::{BufRead, Seek};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Default size of one journal file.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 20;

/// Where journals live, and how large a file grows before rotating.
#[derive(Debug, Clone)]
pub struct Journals {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

impl Journals {
    fn current(&self, unit: &str) -> PathBuf {
        self.dir.join(unit).join("journal.log")
    }

    /// A writer for `unit`: a task appending what it is sent until every
    /// sender is gone.
    pub fn writer(&self, unit: &str) -> JournalWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        let path = self.current(unit);
        let max = self.max_bytes;
        // The task ends when the last writer is dropped (queued lines are
        // still written): the writers own it.
        tokio::spawn(write_loop(path, max, rx));
        JournalWriter { tx }
    }

    /// The last `n` lines of `unit`'s journal. Blocking: call from `spawn_blocking`.
    pub fn tail(&self, unit: &str, n: usize) -> Vec<String> {
        let cur = self.current(unit);
        let old = cur.with_extension("log.1");
        let mut lines: Vec<String> = Vec::new();
        for p in [&old, &cur] {
            if let Ok(text) = std::fs::read_to_string(p) {
                lines.extend(text.lines().map(str::to_owned));
            }
        }
        let skip = lines.len().saturating_sub(n);
        lines.split_off(skip)
    }

    /// Sends every line appended to `unit`'s journal from now on to `tx`,
    /// following rotations, until `tx` closes.
    pub async fn follow(&self, unit: &str, tx: mpsc::Sender<String>) {
        let cur = self.current(unit);
        let mut pos = tokio::fs::metadata(&cur)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let mut ino = inode(&cur).await;
        loop {
            if tx.is_closed() {
                return;
            }
            let now_ino = inode(&cur).await;
            if now_ino != ino {
                // Rotated: finish the old file, then start the new one.
                let old = cur.with_extension("log.1");
                if inode(&old).await == ino {
                    for l in read_from(&old, &mut pos).await {
                        if tx.send(l).await.is_err() {
                            return;
                        }
                    }
                }
                ino = now_ino;
                pos = 0;
            }
            for l in read_from(&cur, &mut pos).await {
                if tx.send(l).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn inode(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    tokio::fs::metadata(p).await.ok().map(|m| m.ino())
}

/// Whole lines of `path` from byte `pos` on (advancing `pos`).
async fn read_from(path: &Path, pos: &mut u64) -> Vec<String> {
    let (path, start) = (path.to_owned(), *pos);
    let r = tokio::task::spawn_blocking(move || -> std::io::Result<(Vec<String>, u64)> {
        let mut f = std::fs::File::open(&path)?;
        if f.metadata()?.len() < start {
            return Ok((Vec::new(), 0));
        }
        f.seek(std::io::SeekFrom::Start(start))?;
        let mut r = std::io::BufReader::new(f);
        let mut out = Vec::new();
        let mut at = start;
        let mut buf = String::new();
        loop {
            buf.clear();
            let n = r.read_line(&mut buf)?;
            if n == 0 || !buf.ends_with('\n') {
                break;
            }
            at += n as u64;
            out.push(buf.trim_end_matches('\n').to_owned());
        }
        Ok((out, at))
    })
    .await;
    match r {
        Ok(Ok((lines, at))) => {
            *pos = at;
            lines
        }
        _ => Vec::new(),
    }
}

/// Appends lines to one unit's journal (cheap to clone).
#[derive(Clone)]
pub struct JournalWriter {
    tx: mpsc::UnboundedSender<String>,
}

impl JournalWriter {
    /// One line from `source` (`stdout`, `stderr`, or `herd` for the
    /// runner's own messages).
    pub fn line(&self, source: &str, text: &str) {
        let stamp = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        let _ = self.tx.send(format!("{stamp} {source} {text}\n"));
    }
}

async fn write_loop(path: PathBuf, max: u64, mut rx: mpsc::UnboundedReceiver<String>) {
    let mut file: Option<(tokio::fs::File, u64)> = None;
    while let Some(line) = rx.recv().await {
        if file.is_none() {
            if let Some(dir) = path.parent() {
                let _ = tokio::fs::create_dir_all(dir).await;
            }
            match tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await
            {
                Ok(f) => {
                    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
                    file = Some((f, len));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open the journal; dropping a line");
                    continue;
                }
            }
        }
        let (f, len) = file.as_mut().expect("opened above");
        if f.write_all(line.as_bytes()).await.is_err() {
            file = None;
            continue;
        }
        *len += line.len() as u64;
        if *len >= max {
            let _ = f.flush().await;
            file = None;
            let _ = tokio::fs::rename(&path, path.with_extension("log.1")).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_rotated_and_tailed() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journals {
            dir: dir.path().to_owned(),
            max_bytes: 2000,
        };
        let w = j.writer("a.service");
        for i in 0..200 {
            w.line("stdout", &format!("line {i}"));
        }
        drop(w);
        let jj = j.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let t = tokio::task::spawn_blocking({
                let jj = jj.clone();
                move || jj.tail("a.service", 3)
            })
            .await
            .unwrap();
            if t.last().is_some_and(|l| l.ends_with("stdout line 199")) {
                assert_eq!(t.len(), 3);
                assert!(t[0].ends_with("line 197"), "{t:?}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{t:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let total: u64 = ["journal.log", "journal.log.1"]
            .iter()
            .map(|f| {
                std::fs::metadata(dir.path().join("a.service").join(f))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum();
        assert!(total <= 2 * 2000 + 100, "journal kept {total} bytes");
        // Timestamps lead every line.
        let line = &j.tail("a.service", 1)[0];
        assert!(
            humantime::parse_rfc3339(line.split(' ').next().unwrap()).is_ok(),
            "{line}"
        );
    }
}
