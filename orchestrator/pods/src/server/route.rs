//! Where a request goes: the Kubernetes URL layout (`/api/v1/namespaces/
//! default/pods/web/status`, `/apis/apps/v1/deployments`, discovery,
//! OpenAPI, health) parsed into a [`Route`].

use crate::api::KindInfo;
use crate::api::kind;

/// A resource request's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: &'static KindInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// `status`, `scale`, `binding`.
    pub sub: Option<String>,
    /// The old `/api/v1/watch/…` form.
    pub legacy_watch: bool,
}

/// What a path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    Version,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1`, `/apis/apps/v1`
    Resources {
        group: String,
        version: String,
    },
    OpenApiV2,
    OpenApiV3,
    /// `/openapi/v3/api/v1`, `/openapi/v3/apis/apps/v1`
    OpenApiV3Doc {
        group: String,
        version: String,
    },
    Resource(Target),
    NotFound,
}

/// Whether `group`/`version` is served.
pub fn served(group: &str, version: &str) -> bool {
    kind::all()
        .iter()
        .any(|k| k.group == group && k.version == version)
}

/// Parses a request path.
pub fn parse(path: &str) -> Route {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segments.as_slice() {
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["version"] => Route::Version,
        ["openapi", "v2"] => Route::OpenApiV2,
        ["openapi", "v3"] => Route::OpenApiV3,
        ["openapi", "v3", "api", v] if served("", v) => Route::OpenApiV3Doc {
            group: String::new(),
            version: (*v).into(),
        },
        ["openapi", "v3", "apis", g, v] if served(g, v) => Route::OpenApiV3Doc {
            group: (*g).into(),
            version: (*v).into(),
        },
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["apis", g] if kind::all().iter().any(|k| k.group == *g) => Route::Group((*g).into()),
        ["api", v] if served("", v) => Route::Resources {
            group: String::new(),
            version: (*v).into(),
        },
        ["apis", g, v] if served(g, v) => Route::Resources {
            group: (*g).into(),
            version: (*v).into(),
        },
        ["api", v, rest @ ..] if served("", v) => resource("", v, rest),
        ["apis", g, v, rest @ ..] if served(g, v) => resource(g, v, rest),
        _ => Route::NotFound,
    }
}

fn resource(group: &str, version: &str, mut rest: &[&str]) -> Route {
    let legacy_watch = rest.first() == Some(&"watch");
    if legacy_watch {
        rest = &rest[1..];
    }
    let find = |plural: &str| kind::by_resource(group, version, plural);
    let target = |kind: &'static KindInfo,
                  namespace: Option<&str>,
                  name: Option<&str>,
                  sub: Option<&str>| {
        Route::Resource(Target {
            kind,
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
            sub: sub.map(str::to_owned),
            legacy_watch,
        })
    };
    match rest {
        // `namespaces/<name>/status` is the namespace's own subresource.
        ["namespaces", name, sub @ ("status" | "finalize")] if group.is_empty() => {
            match find("namespaces") {
                Some(k) => target(k, None, Some(name), Some(sub)),
                None => Route::NotFound,
            }
        }
        ["namespaces", ns, plural, tail @ ..] => match (find(plural), tail) {
            (Some(k), []) if k.namespaced => target(k, Some(ns), None, None),
            (Some(k), [name]) if k.namespaced => target(k, Some(ns), Some(name), None),
            (Some(k), [name, sub]) if k.namespaced => target(k, Some(ns), Some(name), Some(sub)),
            _ => Route::NotFound,
        },
        [plural, tail @ ..] => match (find(plural), tail) {
            (Some(k), []) => target(k, None, None, None),
            (Some(k), [name]) if !k.namespaced => target(k, None, Some(name), None),
            (Some(k), [name, sub]) if !k.namespaced => target(k, None, Some(name), Some(sub)),
            _ => Route::NotFound,
        },
        [] => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        match parse(path) {
            Route::Resource(t) => t,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn kubernetes_paths_parse() {
        let t = target("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(
            (
                t.kind.kind,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            ("Pod", Some("default"), Some("web"), Some("status"))
        );
        let t = target("/apis/apps/v1/deployments");
        assert_eq!(
            (t.kind.kind, t.namespace, t.name),
            ("Deployment", None, None)
        );
        let t = target("/api/v1/namespaces/kube-system");
        assert_eq!(
            (t.kind.kind, t.name.as_deref()),
            ("Namespace", Some("kube-system"))
        );
        let t = target("/api/v1/namespaces/x/status");
        assert_eq!(
            (t.kind.kind, t.sub.as_deref()),
            ("Namespace", Some("status"))
        );
        let t = target("/api/v1/nodes/n1");
        assert_eq!((t.kind.kind, t.name.as_deref()), ("Node", Some("n1")));
        assert!(target("/api/v1/watch/namespaces/default/pods").legacy_watch);
        assert_eq!(
            parse("/apis/apps/v1"),
            Route::Resources {
                group: "apps".into(),
                version: "v1".into()
            }
        );
        assert_eq!(parse("/apis/batch/v1/jobs"), Route::NotFound);
        assert_eq!(
            parse("/api/v1/namespaces/default/deployments"),
            Route::NotFound
        );
        assert_eq!(parse("/api/v1/nodes/n1/x/y"), Route::NotFound);
        assert_eq!(parse("/healthz"), Route::Health);
        assert_eq!(
            parse("/openapi/v3/apis/apps/v1"),
            Route::OpenApiV3Doc {
                group: "apps".into(),
                version: "v1".into()
            }
        );
    }
}
