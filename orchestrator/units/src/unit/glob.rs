//! Glob patterns for `Conflicts=` and `Replaces=`, with the semantics of
//! Go's `path.Match` that fleet used: `*`, `?`, `[a-z]`, `[^x]`, `\` escapes.

/// Whether `pattern` is well formed.
pub fn check(pattern: &str) -> Result<(), String> {
    let p: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                if i + 1 >= p.len() {
                    return Err(format!("{pattern:?} ends in a lone backslash"));
                }
                i += 2;
            }
            '[' => {
                let Some(end) = class_end(&p, i) else {
                    return Err(format!("{pattern:?} has an unterminated ["));
                };
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Whether the pattern holds any glob character.
pub fn is_literal(pattern: &str) -> bool {
    !pattern.contains(['*', '?', '[', '\\'])
}

fn class_end(p: &[char], start: usize) -> Option<usize> {
    let mut j = start + 1;
    if p.get(j) == Some(&'^') {
        j += 1;
    }
    // A ] right after [ or [^ is a member, as in Go.
    if p.get(j) == Some(&']') {
        j += 1;
    }
    while j < p.len() {
        match p[j] {
            '\\' => j += 2,
            ']' => return Some(j),
            _ => j += 1,
        }
    }
    None
}

/// Whether `name` matches `pattern` (a malformed pattern matches nothing).
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

fn go(p: &[char], n: &[char]) -> bool {
    let Some((&c, rest)) = p.split_first() else {
        return n.is_empty();
    };
    match c {
        '*' => (0..=n.len())
            .take_while(|&k| k == 0 || n[k - 1] != '/')
            .any(|k| go(rest, &n[k..])),
        '?' => !n.is_empty() && n[0] != '/' && go(rest, &n[1..]),
        '[' => {
            let Some(end) = class_end(p, 0) else {
                return false;
            };
            let Some((&ch, nrest)) = n.split_first() else {
                return false;
            };
            let mut body = &p[1..end];
            let negate = body.first() == Some(&'^');
            if negate {
                body = &body[1..];
            }
            let mut hit = false;
            let mut k = 0;
            while k < body.len() {
                let lo = if body[k] == '\\' {
                    k += 1;
                    body.get(k).copied().unwrap_or('\\')
                } else {
                    body[k]
                };
                if body.get(k + 1) == Some(&'-') && k + 2 < body.len() {
                    let hi = body[k + 2];
                    hit |= lo <= ch && ch <= hi;
                    k += 3;
                } else {
                    hit |= lo == ch;
                    k += 1;
                }
            }
            hit != negate && go(&p[end + 1..], nrest)
        }
        '\\' => p.get(1).is_some_and(|e| n.first() == Some(e)) && go(&p[2..], &n[1..]),
        c => n.first() == Some(&c) && go(rest, &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_go_path_match() {
        assert!(matches("web@*.service", "web@1.service"));
        assert!(!matches("web@*.service", "db@1.service"));
        assert!(matches("w?b.service", "web.service"));
        assert!(matches("db[0-9].service", "db7.service"));
        assert!(!matches("db[^0-9].service", "db7.service"));
        assert!(matches("a\\*", "a*"));
        assert!(!matches("a\\*", "ab"));
        assert!(check("db[0-9").is_err());
        assert!(is_literal("db.service") && !is_literal("db*"));
    }
}
