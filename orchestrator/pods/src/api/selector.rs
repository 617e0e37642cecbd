//! Label selectors (`app=web,tier in (fe,be),!canary`) and field
//! selectors (`spec.nodeName=n1,status.phase!=Running`) of list and watch
//! requests, parsed once at the edge.

use std::collections::BTreeMap;

use serde_json::Value;

use super::kind::KindInfo;
use super::status::ApiError;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelQuery(Vec<Requirement>);

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut parts) = (0, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn check_key(key: &str, whole: &str) -> Result<String, ApiError> {
    if let Some(why) = super::validation::qualified_name(key) {
        return Err(ApiError::bad_request(format!(
            "unable to parse requirement: invalid label key {key:?}: {why} (in {whole:?})"
        )));
    }
    Ok(key.to_owned())
}

fn check_value(value: &str, whole: &str) -> Result<String, ApiError> {
    if let Some(why) = super::validation::label_value(value) {
        return Err(ApiError::bad_request(format!(
            "unable to parse requirement: invalid label value {value:?}: {why} (in {whole:?})"
        )));
    }
    Ok(value.to_owned())
}

impl LabelQuery {
    /// Parses `query`; a bad requirement is a 400 naming it.
    pub fn parse(query: &str) -> Result<LabelQuery, ApiError> {
        let mut reqs = Vec::new();
        if query.trim().is_empty() {
            return Ok(LabelQuery(reqs));
        }
        for part in split_top(query) {
            let p = part.trim();
            let bad = || {
                ApiError::bad_request(format!(
                    "unable to parse requirement: {p:?} in label selector {query:?}"
                ))
            };
            let set = |rest: &str| -> Result<Vec<String>, ApiError> {
                let inner = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(bad)?;
                inner
                    .split(',')
                    .map(|v| check_value(v.trim(), query))
                    .collect()
            };
            let req = if let Some(k) = p.strip_prefix('!') {
                Requirement::DoesNotExist(check_key(k.trim(), query)?)
            } else if let Some((k, v)) = p.split_once("!=") {
                Requirement::NotEquals(check_key(k.trim(), query)?, check_value(v.trim(), query)?)
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                Requirement::Equals(check_key(k.trim(), query)?, check_value(v.trim(), query)?)
            } else if let Some((k, rest)) = p.split_once(" notin ") {
                Requirement::NotIn(check_key(k.trim(), query)?, set(rest)?)
            } else if let Some((k, rest)) = p.split_once(" in ") {
                Requirement::In(check_key(k.trim(), query)?, set(rest)?)
            } else if p.is_empty() || p.contains(char::is_whitespace) {
                return Err(bad());
            } else {
                Requirement::Exists(check_key(p, query)?)
            };
            reqs.push(req);
        }
        Ok(LabelQuery(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

/// A parsed field selector: `(field, value, equal)` terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldQuery(Vec<(String, String, bool)>);

impl FieldQuery {
    /// Parses `query` for `kind`: only the fields the kind supports
    /// (`metadata.name`, `metadata.namespace` and its own) are accepted.
    pub fn parse(query: &str, kind: &KindInfo) -> Result<FieldQuery, ApiError> {
        let mut terms = Vec::new();
        if query.trim().is_empty() {
            return Ok(FieldQuery(terms));
        }
        for part in query.split(',') {
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, v, true)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: {query:?}; can't understand {part:?}"
                )));
            };
            let field = field.trim();
            let supported = matches!(field, "metadata.name" | "metadata.namespace")
                || kind.fields.contains(&field);
            if !supported {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            terms.push((field.to_owned(), value.trim().to_owned(), equal));
        }
        Ok(FieldQuery(terms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name an exact `metadata.name=` term asks for.
    pub fn name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _, eq)| f == "metadata.name" && *eq)
            .map(|(_, v, _)| v.as_str())
    }

    /// Whether the object (as JSON) satisfies every term. A field that is
    /// absent reads as empty, as in Kubernetes (`spec.nodeName=` selects
    /// unscheduled pods).
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, want, equal)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let have = match object.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Object(o)) if field == "source" => o
                    .get("component")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                _ => String::new(),
            };
            // Kubernetes' spec.unschedulable reads false when absent.
            let have = if have.is_empty() && field == "spec.unschedulable" {
                "false".to_owned()
            } else {
                have
            };
            (have == *want) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiObject, Pod};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_parse_and_match() {
        let l = labels(&[("app", "web"), ("tier", "fe")]);
        for (q, want) in [
            ("", true),
            ("app=web", true),
            ("app==web,tier=fe", true),
            ("app!=web", false),
            ("tier in (fe,be)", true),
            ("tier notin (fe)", false),
            ("app,!canary", true),
            ("canary", false),
        ] {
            assert_eq!(LabelQuery::parse(q).unwrap().matches(&l), want, "{q}");
        }
        for bad in ["app in fe", "a b", "app=bad value!", "-x=y"] {
            let e = LabelQuery::parse(bad).unwrap_err();
            assert_eq!(e.code, 400, "{bad}");
        }
    }

    #[test]
    fn field_selectors_accept_only_supported_fields() {
        let q = FieldQuery::parse("spec.nodeName=,metadata.name=web", Pod::INFO).unwrap();
        assert_eq!(q.name(), Some("web"));
        let pod = serde_json::json!({"metadata": {"name": "web"}, "spec": {}});
        assert!(q.matches(&pod));
        let bound = serde_json::json!({"metadata": {"name": "web"}, "spec": {"nodeName": "n1"}});
        assert!(!q.matches(&bound));
        let e = FieldQuery::parse("spec.image=x", Pod::INFO).unwrap_err();
        assert_eq!(e.message, "field label not supported: spec.image");
    }
}
