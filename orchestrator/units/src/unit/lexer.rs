//! systemd's unit-file syntax, before any key means anything: sections,
//! `Key=Value` lines, comments, continuation lines. Each entry keeps its
//! line number so later errors can name it.

use super::UnitError;

/// One assignment, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub section: String,
    pub key: String,
    pub value: String,
    /// 1-based line where the assignment starts.
    pub line: usize,
    /// Line of its section's header.
    pub section_line: usize,
}

/// Splits `text` into entries. A line ending in `\` continues on the next
/// (the backslash becomes a space, as systemd does); comment lines inside
/// a continuation are skipped.
pub fn lex(file: &str, text: &str) -> Result<Vec<Entry>, UnitError> {
    let err = |line: usize, reason: String| UnitError::Syntax {
        file: file.to_owned(),
        line,
        reason,
    };
    let mut entries = Vec::new();
    let mut section: Option<(String, usize)> = None;
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((n, raw)) = lines.next() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
                return Err(err(n, format!("section header {line:?} does not end in ]")));
            };
            if name.is_empty() || name.contains(['[', ']']) {
                return Err(err(n, format!("bad section header {line:?}")));
            }
            section = Some((name.to_owned(), n));
            continue;
        }
        let mut full = line.to_owned();
        while full.ends_with('\\') {
            full.pop();
            full.push(' ');
            let next = loop {
                match lines.next() {
                    None => break None,
                    Some((_, l)) if l.trim_start().starts_with(['#', ';']) => continue,
                    Some((_, l)) => break Some(l.trim()),
                }
            };
            match next {
                Some(l) => full.push_str(l),
                None => break,
            }
        }
        let Some((sect, section_line)) = &section else {
            return Err(err(n, "assignment outside of any [Section]".into()));
        };
        let Some((key, value)) = full.split_once('=') else {
            return Err(err(n, format!("{line:?} is not a Key=Value assignment")));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(err(n, format!("bad key {key:?}")));
        }
        entries.push(Entry {
            section: sect.clone(),
            key: key.to_owned(),
            value: value.trim().to_owned(),
            line: n,
            section_line: *section_line,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_comments_and_continuations() {
        let text = "# c\n[Unit]\nDescription = hello world \n\n[Service]\nExecStart=/bin/echo a \\\n  # skipped\n  b\n; also a comment\nType=simple\n";
        let e = lex("x.service", text).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(
            (
                e[0].section.as_str(),
                e[0].key.as_str(),
                e[0].value.as_str(),
                e[0].line
            ),
            ("Unit", "Description", "hello world", 3)
        );
        assert_eq!(e[1].value, "/bin/echo a  b");
        assert_eq!(e[1].line, 6);
        assert_eq!(e[2].line, 10);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let e = lex("x.service", "Description=x\n").unwrap_err().to_string();
        assert!(e.contains("x.service:1") && e.contains("outside"), "{e}");
        let e = lex("x.service", "[Unit]\n\nnot an assignment\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.service:3"), "{e}");
        let e = lex("x.service", "[Unit\n").unwrap_err().to_string();
        assert!(e.contains("x.service:1"), "{e}");
    }
}
