//! The verbs on resources: get, list and watch (with label and field
//! selectors, as Tables for kubectl's printing), create, replace, patch,
//! delete and deletecollection, and the `status`, `scale` and `binding`
//! subresources — each a thin step from HTTP to the [`Registry`].

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::respond::{self, Accept};
use super::route::Target;
use crate::api::decode::{self, typed};
use crate::api::selector::{FieldQuery, LabelQuery};
use crate::api::table::{self, IncludeObject};
use crate::api::{ApiError, ApiObject, Pod};
use crate::registry::patch::PatchKind;
use crate::registry::watch::{Filter, Watched};
use crate::registry::{DeleteOptions, Deletion, Part, Propagation, Registry, ScaleTarget};

/// One request, parsed.
pub struct Call {
    pub method: Method,
    pub target: Target,
    pub query: HashMap<String, String>,
    pub content_type: String,
    pub accept: Accept,
    pub body: Bytes,
    /// Fires when the server stops (ends watches).
    pub shutdown: CancellationToken,
}

impl Call {
    fn q(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    fn watching(&self) -> bool {
        self.target.legacy_watch || matches!(self.q("watch"), Some("true" | "1"))
    }

    fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }

    fn namespace(&self) -> &str {
        self.target.namespace.as_deref().unwrap_or("")
    }

    fn name(&self) -> Result<&str, ApiError> {
        self.target
            .name
            .as_deref()
            .ok_or_else(|| ApiError::method_not_allowed("this verb needs a name in the path"))
    }

    fn filter<T: ApiObject>(&self) -> Result<Filter, ApiError> {
        let mut fields = FieldQuery::parse(self.q("fieldSelector").unwrap_or(""), T::INFO)?;
        if let Some(name) = &self.target.name {
            // `…/watch/…/pods/web` and `?watch` on a name watch that one object.
            fields = FieldQuery::parse(
                &format!(
                    "metadata.name={name}{}{}",
                    if fields.is_empty() { "" } else { "," },
                    self.q("fieldSelector").unwrap_or("")
                ),
                T::INFO,
            )?;
        }
        Ok(Filter {
            namespace: self.target.namespace.clone().filter(|_| T::INFO.namespaced),
            labels: LabelQuery::parse(self.q("labelSelector").unwrap_or(""))?,
            fields,
        })
    }

    fn object<T: ApiObject>(&self) -> Result<T, ApiError> {
        let value = decode::parse(&self.body, &self.content_type)?;
        let mut object: T = typed(value)?;
        let m = object.meta_mut();
        if T::INFO.namespaced {
            match (m.namespace.as_str(), self.target.namespace.as_deref()) {
                ("", Some(ns)) => m.namespace = ns.to_owned(),
                (have, Some(ns)) if have != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {}
            }
        }
        if let Some(name) = &self.target.name {
            if m.name.is_empty() {
                m.name = name.clone();
            } else if m.name != *name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    m.name
                )));
            }
        }
        Ok(object)
    }
}

/// `object` as the client asked: a Table or JSON.
fn render<T: ApiObject>(call: &Call, objects: &[T], revision: i64, single: bool) -> Value {
    match call.accept.table {
        Some(version) => {
            let include = IncludeObject::parse(call.q("includeObject").unwrap_or(""));
            let mut t = table::table(objects, revision, include);
            t["apiVersion"] = json!(version);
            t
        }
        None if single => decode::to_value(&objects[0]),
        None => json!({
            "kind": format!("{}List", T::INFO.kind),
            "apiVersion": T::INFO.api_version(),
            "metadata": {"resourceVersion": revision.to_string()},
            "items": objects.iter().map(decode::to_value).collect::<Vec<_>>(),
        }),
    }
}

fn ok(value: &Value) -> Result<Response, ApiError> {
    Ok(respond::json(StatusCode::OK, value))
}

/// Handles `call` on kind `T`.
pub async fn handle<T: ApiObject>(registry: &Registry, call: Call) -> Result<Response, ApiError> {
    let sub = call.target.sub.clone();
    match (sub.as_deref(), call.target.name.is_some(), &call.method) {
        (None, _, &Method::GET) if call.watching() => watch::<T>(registry, call).await,
        (None, false, &Method::GET) => {
            let filter = call.filter::<T>()?;
            let (items, revision) = registry.list::<T>(filter.namespace.as_deref()).await?;
            let items: Vec<T> = items.into_iter().filter(|o| filter.matches(o)).collect();
            ok(&render(&call, &items, revision, false))
        }
        (None, false, &Method::POST) => {
            let object = call.object::<T>()?;
            let created = registry.create(object, call.dry_run()).await?;
            Ok(respond::json(
                StatusCode::CREATED,
                &decode::to_value(&created),
            ))
        }
        (None, false, &Method::DELETE) => delete_collection::<T>(registry, &call).await,
        (None | Some("status"), true, &Method::GET) => {
            let object: T = registry.get(call.namespace(), call.name()?).await?;
            let rev = object.revision();
            ok(&render(&call, &[object], rev, true))
        }
        (None | Some("status"), true, &Method::PUT) => {
            let part = if sub.is_some() {
                Part::Status
            } else {
                Part::Main
            };
            if sub.is_some() && !T::INFO.status {
                return Err(ApiError::not_found(T::INFO.what(), call.name()?));
            }
            let object = call.object::<T>()?;
            let updated = registry.update(object, part).await?;
            ok(&decode::to_value(&updated))
        }
        (None | Some("status"), true, &Method::PATCH) => {
            let part = if sub.is_some() {
                Part::Status
            } else {
                Part::Main
            };
            let kind = PatchKind::from_content_type(&call.content_type)?;
            let patched: T = registry
                .patch(call.namespace(), call.name()?, kind, &call.body, part)
                .await?;
            ok(&decode::to_value(&patched))
        }
        (None, true, &Method::DELETE) => {
            let options = delete_options(&call)?;
            let name = call.name()?;
            match registry
                .delete::<T>(call.namespace(), name, &options)
                .await?
            {
                Deletion::Deleted(o) | Deletion::Pending(o) => ok(&decode::to_value(&o)),
            }
        }
        (Some("binding"), true, &Method::POST) if T::INFO.kind == "Pod" => {
            bind(registry, &call).await
        }
        (Some("scale"), true, _) if T::INFO.scale => {
            Err(ApiError::internal("scale is handled per kind"))
        }
        (Some(other), _, _) => Err(ApiError::new(
            404,
            "NotFound",
            format!("{} has no subresource {other:?}", T::INFO.plural),
        )),
        (None, _, m) => Err(ApiError::method_not_allowed(format!(
            "{m} is not supported on this path"
        ))),
    }
}

/// The `scale` subresource of `T`.
pub async fn scale<T: ScaleTarget>(registry: &Registry, call: Call) -> Result<Response, ApiError> {
    let (ns, name) = (call.namespace().to_owned(), call.name()?.to_owned());
    let scale = match call.method {
        Method::GET => registry.get_scale::<T>(&ns, &name).await?,
        Method::PUT => {
            let value = decode::parse(&call.body, &call.content_type)?;
            let mut value = value;
            decode::strip_nulls(&mut value);
            let scale = serde_json::from_value(value)
                .map_err(|e| ApiError::bad_request(format!("not a Scale: {e}")))?;
            registry.set_scale::<T>(&ns, &name, scale).await?
        }
        Method::PATCH => {
            let kind = PatchKind::from_content_type(&call.content_type)?;
            registry
                .patch_scale::<T>(&ns, &name, kind, &call.body)
                .await?
        }
        ref m => {
            return Err(ApiError::method_not_allowed(format!(
                "{m} is not supported on scale"
            )));
        }
    };
    ok(&serde_json::to_value(&scale).expect("a scale serializes"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteBody {
    #[serde(default)]
    propagation_policy: Option<String>,
    #[serde(default)]
    orphan_dependents: Option<bool>,
    #[serde(default)]
    preconditions: Option<Preconditions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Preconditions {
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
}

fn delete_options(call: &Call) -> Result<DeleteOptions, ApiError> {
    let body: DeleteBody = if call.body.iter().all(u8::is_ascii_whitespace) {
        DeleteBody::default()
    } else {
        let mut v = decode::parse(&call.body, &call.content_type)?;
        decode::strip_nulls(&mut v);
        serde_json::from_value(v)
            .map_err(|e| ApiError::bad_request(format!("not DeleteOptions: {e}")))?
    };
    let policy = body
        .propagation_policy
        .or_else(|| call.q("propagationPolicy").map(str::to_owned));
    let propagation = match (
        policy.as_deref(),
        body.orphan_dependents
            .or(call.q("orphanDependents").map(|v| v == "true")),
    ) {
        (Some("Foreground"), _) => Propagation::Foreground,
        (Some("Orphan"), _) | (None, Some(true)) => Propagation::Orphan,
        (Some("Background") | None, _) => Propagation::Background,
        (Some(other), _) => {
            return Err(ApiError::invalid(
                crate::api::status::What {
                    group: "",
                    resource: "deleteoptions",
                    kind: "DeleteOptions",
                },
                "",
                vec![crate::api::Cause::not_supported(
                    "propagationPolicy",
                    other,
                    &["Foreground", "Background", "Orphan"],
                )],
            ));
        }
    };
    let pre = body.preconditions.unwrap_or_default();
    Ok(DeleteOptions {
        propagation,
        precondition_uid: pre.uid,
        precondition_revision: pre.resource_version.and_then(|r| r.parse().ok()),
    })
}

async fn delete_collection<T: ApiObject>(
    registry: &Registry,
    call: &Call,
) -> Result<Response, ApiError> {
    let filter = call.filter::<T>()?;
    let options = delete_options(call)?;
    let (items, _) = registry.list::<T>(filter.namespace.as_deref()).await?;
    let mut deleted = Vec::new();
    for o in items.into_iter().filter(|o| filter.matches(o)) {
        match registry
            .delete::<T>(&o.meta().namespace, &o.meta().name, &options)
            .await
        {
            Ok(Deletion::Deleted(o) | Deletion::Pending(o)) => deleted.push(o),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    ok(&json!({
        "kind": format!("{}List", T::INFO.kind),
        "apiVersion": T::INFO.api_version(),
        "metadata": {},
        "items": deleted.iter().map(decode::to_value).collect::<Vec<_>>(),
    }))
}

/// `POST pods/<name>/binding`: binds an unbound pod to a node.
async fn bind(registry: &Registry, call: &Call) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct Binding {
        target: BindingTarget,
    }
    #[derive(Deserialize)]
    struct BindingTarget {
        name: String,
    }
    let value = decode::parse(&call.body, &call.content_type)?;
    let binding: Binding = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("not a Binding: {e}")))?;
    let pod: Pod = registry.get(call.namespace(), call.name()?).await?;
    registry.bind(pod, &binding.target.name).await?;
    Ok(respond::json(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// A watch: events as JSON lines until the client goes, the server
/// stops, `timeoutSeconds` pass or the watch fails (an ERROR event).
async fn watch<T: ApiObject>(registry: &Registry, call: Call) -> Result<Response, ApiError> {
    let filter = call.filter::<T>()?;
    let from = call
        .q("resourceVersion")
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {r:?}")))
        })
        .transpose()?;
    let events = registry.watch::<T>(from, filter).await?;
    let timeout = call
        .q("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(3600));
    let table = call.accept.table;
    let include = IncludeObject::parse(call.q("includeObject").unwrap_or(""));
    let shutdown = call.shutdown.clone();
    let deadline = tokio::time::sleep(timeout);
    let stop = async move {
        tokio::select! {
            _ = shutdown.cancelled() => {},
            _ = deadline => {},
        }
    };
    let lines = events
        .map(move |w| match w {
            Watched::Event(kind, object) => {
                let object = match table {
                    Some(version) => {
                        let mut t = table::table(
                            std::slice::from_ref(object.as_ref()),
                            object.revision(),
                            include,
                        );
                        t["apiVersion"] = json!(version);
                        t
                    }
                    None => decode::to_value(object.as_ref()),
                };
                json!({"type": kind.as_str(), "object": object})
            }
            Watched::Error(e) => json!({"type": "ERROR", "object": e.status()}),
        })
        .take_until(Box::pin(stop));
    Ok(respond::stream(lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_options_from_body_or_query() {
        let call = |body: &str, query: &[(&str, &str)]| Call {
            method: Method::DELETE,
            target: Target {
                kind: Pod::INFO,
                namespace: Some("default".into()),
                name: Some("web".into()),
                sub: None,
                legacy_watch: false,
            },
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            content_type: "application/json".into(),
            accept: Accept::default(),
            body: Bytes::from(body.to_owned()),
            shutdown: CancellationToken::new(),
        };
        let o = delete_options(&call(
            r#"{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Foreground"}"#,
            &[],
        ))
        .unwrap();
        assert_eq!(o.propagation, Propagation::Foreground);
        let o = delete_options(&call("", &[("propagationPolicy", "Orphan")])).unwrap();
        assert_eq!(o.propagation, Propagation::Orphan);
        let o = delete_options(&call(r#"{"preconditions":{"uid":"u1"}}"#, &[])).unwrap();
        assert_eq!(o.precondition_uid.as_deref(), Some("u1"));
        assert_eq!(
            delete_options(&call(r#"{"propagationPolicy":"Now"}"#, &[]))
                .unwrap_err()
                .code,
            422
        );
    }
}
