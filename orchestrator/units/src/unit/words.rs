//! Values inside assignments: systemd's quoting and word splitting, the
//! `%` specifiers, time spans, sizes, booleans and signal names.

/// Splits `s` into words as systemd does for command lines and lists:
/// whitespace separates, single and double quotes group, backslash
/// escapes (`\n`, `\t`, `\\`, `\"`, `\'`, `\ `). `Err` says what is wrong.
pub fn split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                let Some(n) = chars.next() else {
                    return Err("ends in a lone backslash".into());
                };
                cur.push(match n {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    other => other,
                });
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote"));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// What the `%` specifiers expand to. Machine facts are unknown where a
/// unit is checked but not run (the CLI, the engine): there `%H`, `%m`
/// and `%b` stay as written and are expanded by the runner.
#[derive(Debug, Clone, Default)]
pub struct Specifiers {
    pub name: String,
    pub name_no_suffix: String,
    pub prefix: String,
    pub instance: String,
    pub machine: Option<MachineFacts>,
}

/// The facts of the machine a unit runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineFacts {
    pub hostname: String,
    pub machine_id: String,
    pub boot_id: String,
}

/// Expands `%n %N %p %P %i %I %H %m %b %%` in `s`; `name_only` refuses
/// the machine specifiers (where a value is decided before any machine
/// is, as in `[X-Fleet]`).
pub fn expand(s: &str, spec: &Specifiers, name_only: bool) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(k) = chars.next() else {
            return Err("ends in a lone %".into());
        };
        let machine = |f: fn(&MachineFacts) -> &str| -> Result<String, String> {
            if name_only {
                return Err(format!("%{k} names a machine, which is not known yet here"));
            }
            Ok(spec
                .machine
                .as_ref()
                .map_or(format!("%{k}"), |m| f(m).to_owned()))
        };
        match k {
            '%' => out.push('%'),
            'n' => out.push_str(&spec.name),
            'N' => out.push_str(&spec.name_no_suffix),
            'p' => out.push_str(&spec.prefix),
            'P' => out.push_str(&super::name::unescape(&spec.prefix)),
            'i' => out.push_str(&spec.instance),
            'I' => out.push_str(&super::name::unescape(&spec.instance)),
            'H' => out.push_str(&machine(|m| &m.hostname)?),
            'm' => out.push_str(&machine(|m| &m.machine_id)?),
            'b' => out.push_str(&machine(|m| &m.boot_id)?),
            other => {
                return Err(format!(
                    "unknown specifier %{other} (known: %n %N %p %P %i %I %H %m %b %%)"
                ));
            }
        }
    }
    Ok(out)
}

/// A systemd time span: `90`, `5s`, `1min 30s`, `200ms`, `2h`, `infinity`
/// (`None`).
pub fn timespan(s: &str) -> Result<Option<std::time::Duration>, String> {
    let s = s.trim();
    if s == "infinity" {
        return Ok(None);
    }
    if let Ok(secs) = s.parse::<f64>() {
        if secs < 0.0 || !secs.is_finite() {
            return Err(format!("{s:?} is not a time span"));
        }
        return Ok(Some(std::time::Duration::from_secs_f64(secs)));
    }
    let mut total = std::time::Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_end);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a time span"))?;
        let after = after.trim_start();
        let unit_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, tail) = after.split_at(unit_end);
        let secs = match unit {
            "us" | "usec" => 1e-6,
            "ms" | "msec" => 1e-3,
            "" | "s" | "sec" | "second" | "seconds" => 1.0,
            "m" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            _ => return Err(format!("{s:?}: unknown time unit {unit:?}")),
        };
        total += std::time::Duration::from_secs_f64(n * secs);
        rest = tail;
    }
    Ok(Some(total))
}

/// A size in bytes: `1024`, `64K`, `512M`, `2G` (powers of 1024), or
/// `infinity` (`None`).
pub fn size(s: &str) -> Result<Option<u64>, String> {
    let s = s.trim();
    if s == "infinity" {
        return Ok(None);
    }
    let (num, mult) = match s.chars().last() {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        Some('T') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 512M)"))?;
    n.checked_mul(mult)
        .map(Some)
        .ok_or_else(|| format!("{s:?} is too large"))
}

pub fn boolean(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (yes/no)")),
    }
}

/// A signal by name (`SIGTERM`, `TERM`) or number.
pub fn signal(s: &str) -> Result<i32, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>()
        && (1..=64).contains(&n)
    {
        return Ok(n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    Ok(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        _ => return Err(format!("{s:?} is not a signal (e.g. SIGTERM)")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quoting_like_systemd() {
        assert_eq!(
            split(r#"/bin/sh -c "echo 'a b'; exit 3""#).unwrap(),
            ["/bin/sh", "-c", "echo 'a b'; exit 3"]
        );
        assert_eq!(
            split(r#"a\ b 'c d' "" x"#).unwrap(),
            ["a b", "c d", "", "x"]
        );
        assert!(split("\"open").unwrap_err().contains("unterminated"));
    }

    #[test]
    fn specifiers() {
        let mut s = Specifiers {
            name: "web@8080.service".into(),
            name_no_suffix: "web@8080".into(),
            prefix: "web".into(),
            instance: "8080".into(),
            machine: None,
        };
        assert_eq!(
            expand("%p-%i %n %N 100%%", &s, true).unwrap(),
            "web-8080 web@8080.service web@8080 100%"
        );
        assert_eq!(expand("on %H", &s, false).unwrap(), "on %H");
        assert!(expand("on %H", &s, true).unwrap_err().contains("machine"));
        assert!(
            expand("%z", &s, false)
                .unwrap_err()
                .contains("unknown specifier %z")
        );
        s.machine = Some(MachineFacts {
            hostname: "m1".into(),
            machine_id: "abc".into(),
            boot_id: "b".into(),
        });
        assert_eq!(expand("%H/%m/%b", &s, false).unwrap(), "m1/abc/b");
    }

    #[test]
    fn spans_sizes_signals() {
        use std::time::Duration;
        assert_eq!(timespan("90").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(timespan("1min 30s").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(timespan("200ms").unwrap(), Some(Duration::from_millis(200)));
        assert_eq!(timespan("infinity").unwrap(), None);
        assert!(timespan("5 fortnights").is_err());
        assert_eq!(size("64M").unwrap(), Some(64 << 20));
        assert!(size("lots").is_err());
        assert_eq!(signal("SIGINT").unwrap(), libc::SIGINT);
        assert_eq!(signal("KILL").unwrap(), libc::SIGKILL);
        assert!(signal("SIGNOPE").is_err());
    }

    proptest! {
        #[test]
        fn split_never_panics(s in ".{0,64}") {
            let _ = split(&s);
        }

        #[test]
        fn quoted_words_round_trip(words in proptest::collection::vec("[a-z \"'\\\\$]{0,8}", 0..5)) {
            let line: Vec<String> = words.iter().map(|w| format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))).collect();
            prop_assert_eq!(split(&line.join(" ")).unwrap(), words);
        }
    }
}
