//! A small, safe `{{ name }}` substitution for cloud-configs and kernel
//! command lines: no code, no loops, only named values; a missing value is
//! an error that names it.

use std::collections::BTreeMap;

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template variable `{name}` (line {line}) has no value for this machine")]
    Missing { name: String, line: usize },
    #[error("unclosed `{{{{` on line {line}")]
    Unclosed { line: usize },
    #[error("invalid variable name {name:?} on line {line}")]
    BadName { name: String, line: usize },
}

/// Values a template may use, by dotted name (`metadata.role`).
pub type Vars = BTreeMap<String, String>;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

/// Replaces every `{{ name }}` in `template` with `vars[name]`.
pub fn render(template: &str, vars: &Vars) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let line_of = |rest: &str| {
        template[..template.len() - rest.len()]
            .matches('\n')
            .count()
            + 1
    };
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed {
            line: line_of(&rest[start..]),
        })?;
        let name = after[..end].trim();
        let line = line_of(&rest[start..]);
        if !valid_name(name) {
            return Err(TemplateError::BadName {
                name: name.to_owned(),
                line,
            });
        }
        let value = vars.get(name).ok_or_else(|| TemplateError::Missing {
            name: name.to_owned(),
            line,
        })?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks a template's syntax without values (at config load time).
pub fn check(template: &str) -> Result<Vec<String>, TemplateError> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let line = template[..template.len() - rest.len() + start]
            .matches('\n')
            .count()
            + 1;
        let end = after.find("}}").ok_or(TemplateError::Unclosed { line })?;
        let name = after[..end].trim();
        if !valid_name(name) {
            return Err(TemplateError::BadName {
                name: name.to_owned(),
                line,
            });
        }
        names.push(name.to_owned());
        rest = &after[end + 2..];
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitutes_and_reports_missing_names() {
        let v = vars(&[("hostname", "node1"), ("metadata.role", "etcd")]);
        assert_eq!(
            render("host: {{hostname}}\nrole: {{ metadata.role }}\n", &v).unwrap(),
            "host: node1\nrole: etcd\n"
        );
        assert_eq!(
            render("a\n{{ token }}", &v),
            Err(TemplateError::Missing {
                name: "token".into(),
                line: 2
            })
        );
        assert_eq!(render("{{ x", &v), Err(TemplateError::Unclosed { line: 1 }));
        assert!(matches!(
            render("{{ a b }}", &v),
            Err(TemplateError::BadName { .. })
        ));
        // iPXE's own ${var} syntax passes through untouched.
        assert_eq!(render("${mac}", &v).unwrap(), "${mac}");
    }

    #[test]
    fn values_are_not_re_expanded() {
        let v = vars(&[("a", "{{ b }}"), ("b", "no")]);
        assert_eq!(render("{{a}}", &v).unwrap(), "{{ b }}");
    }

    proptest! {
        #[test]
        fn render_never_panics(t in "[a-z{} \n.]{0,60}") {
            let v = vars(&[("a", "1")]);
            let _ = render(&t, &v);
            let _ = check(&t);
        }
    }
}
