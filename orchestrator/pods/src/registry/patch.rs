//! The three patch types kubectl sends: JSON patch (RFC 6902), JSON merge
//! patch (RFC 7386) and Kubernetes' strategic merge patch, whose list
//! semantics (merge keys, `$patch`, `$setElementOrder`, `$retainKeys`,
//! `$deleteFromPrimitiveList`) come from the kinds' own schemas.

use serde_json::{Map, Value};

use crate::api::decode::typed;
use crate::api::schema::{self, property};
use crate::api::{ApiError, ApiObject};

/// Which patch a request carries (by its content type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
}

impl PatchKind {
    pub fn from_content_type(content_type: &str) -> Result<PatchKind, ApiError> {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        match essence {
            "application/json-patch+json" => Ok(PatchKind::Json),
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
            "application/apply-patch+yaml" => Err(ApiError::unsupported_media_type(
                "application/apply-patch+yaml (server-side apply is not implemented: use client-side `kubectl apply`)",
            )),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

/// RFC 7386: objects merge, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Removes every `$directive` key, recursively.
fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

fn strategy(field_schema: Option<&Value>) -> (bool, bool, Option<String>) {
    let s = field_schema
        .and_then(|f| f.get("x-kubernetes-patch-strategy"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let key = field_schema
        .and_then(|f| f.get("x-kubernetes-patch-merge-key"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    (
        s.split(',').any(|x| x == "merge"),
        s.split(',').any(|x| x == "retainKeys"),
        key,
    )
}

/// Kubernetes' strategic merge patch of `target` by `patch`, where
/// `schema` describes `target` (None: plain merge semantics).
pub fn strategic_merge(
    target: &mut Value,
    patch: &Value,
    schema: Option<&Value>,
) -> Result<(), String> {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = patch.clone();
            strip_directives(&mut replaced);
            *target = replaced;
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch type {other:?} in $patch")),
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    let mut orders = Vec::new();
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            orders.push((field.to_owned(), v.clone()));
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(gone)) = (t.get_mut(field), v) {
                list.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        let field_schema = schema.and_then(|s| property(s, k));
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(o) if o.get("$patch").and_then(Value::as_str) == Some("delete") => {
                t.remove(k);
            }
            Value::Object(_) => {
                let child_schema = field_schema.map(schema::resolve);
                let (_, retain, _) = strategy(field_schema);
                let slot = t.entry(k.clone()).or_insert(Value::Null);
                strategic_merge(slot, v, child_schema)?;
                if retain
                    && let (Some(Value::Array(keep)), Value::Object(obj)) =
                        (v.get("$retainKeys"), slot)
                {
                    obj.retain(|key, _| keep.iter().any(|x| x == key));
                }
            }
            Value::Array(items) => {
                let (merge, _, key) = strategy(field_schema);
                let item_schema = field_schema.and_then(schema::items);
                if merge {
                    let slot = t.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                    merge_list(slot, items, key.as_deref(), item_schema)?;
                } else {
                    let mut replaced = v.clone();
                    strip_directives(&mut replaced);
                    t.insert(k.clone(), replaced);
                }
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
    for (field, order) in orders {
        let field_schema = schema.and_then(|s| property(s, &field));
        let (_, _, key) = strategy(field_schema);
        if let (Some(Value::Array(list)), Value::Array(order)) = (t.get_mut(&field), order) {
            let position = |item: &Value| {
                order.iter().position(|o| match &key {
                    Some(k) => o.get(k) == item.get(k),
                    None => o == item,
                })
            };
            let mut indexed: Vec<(usize, usize, Value)> = list
                .drain(..)
                .enumerate()
                .map(|(i, item)| (position(&item).unwrap_or(usize::MAX), i, item))
                .collect();
            indexed.sort_by_key(|(p, i, _)| (*p, *i));
            list.extend(indexed.into_iter().map(|(_, _, item)| item));
        }
    }
    Ok(())
}

/// Merges list `patch` into `target` by `key` (primitive lists: union).
fn merge_list(
    target: &mut Value,
    patch: &[Value],
    key: Option<&str>,
    item_schema: Option<&Value>,
) -> Result<(), String> {
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let mut kept: Vec<Value> = patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        kept.iter_mut().for_each(strip_directives);
        *target = Value::Array(kept);
        return Ok(());
    }
    if !target.is_array() {
        *target = Value::Array(Vec::new());
    }
    let list = target.as_array_mut().expect("made an array above");
    let Some(key) = key else {
        for item in patch {
            if !list.contains(item) {
                list.push(item.clone());
            }
        }
        return Ok(());
    };
    for item in patch {
        let id = item
            .get(key)
            .ok_or_else(|| format!("map: {item} does not contain declared merge key: {key}"))?;
        let found = list.iter().position(|x| x.get(key) == Some(id));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            list.retain(|x| x.get(key) != Some(id));
            continue;
        }
        match found {
            Some(i) => strategic_merge(&mut list[i], item, item_schema)?,
            None => {
                let mut new = item.clone();
                strip_directives(&mut new);
                list.push(new);
            }
        }
    }
    Ok(())
}

/// Patches the JSON document `doc` with `body` as `kind` says; `root` is
/// the schema of `doc` (for strategic merge).
pub fn apply_value(
    doc: &mut Value,
    kind: PatchKind,
    body: &[u8],
    root: Option<&Value>,
) -> Result<(), ApiError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not JSON: {e}")))?;
    match kind {
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch)
                .map_err(|e| ApiError::bad_request(format!("not a JSON patch: {e}")))?;
            json_patch::patch(doc, &ops).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the JSON patch does not apply: {e}"),
                )
            })?;
        }
        PatchKind::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            merge_patch(doc, &patch);
        }
        PatchKind::Strategic => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
            strategic_merge(doc, &patch, root).map_err(ApiError::bad_request)?;
        }
    }
    strip_directives(doc);
    Ok(())
}

/// `current` patched by `body` as `kind` says, decoded and checked again
/// as a `T` (a patch that adds an unknown field is refused like a create).
pub fn apply<T: ApiObject>(current: &T, kind: PatchKind, body: &[u8]) -> Result<T, ApiError> {
    let mut doc = serde_json::to_value(current).expect("API objects serialize");
    let root = schema::definitions().get(schema::name_of::<T>().as_str());
    apply_value(&mut doc, kind, body, root)?;
    typed::<T>(doc)
}

/// `current` patched by `body` for an update, and whether the patch named
/// a resourceVersion. The patch applies to `current` without its
/// resourceVersion, so only one the patch sets counts: it is a
/// precondition (a stale one is a conflict, and the caller must not retry
/// on conflicts); without one the caller retries on conflicts. The result
/// carries `current`'s resourceVersion for the compare-and-swap.
pub fn apply_for_update<T: ApiObject>(
    current: &T,
    kind: PatchKind,
    body: &[u8],
) -> Result<(T, bool), ApiError> {
    let mut base = current.clone();
    base.meta_mut().resource_version.clear();
    let mut new = apply(&base, kind, body)?;
    let requested = new.revision();
    if requested != 0 && requested != current.revision() {
        return Err(ApiError::conflict(T::INFO.what(), &current.meta().name));
    }
    new.meta_mut().resource_version = current.meta().resource_version.clone();
    Ok((new, requested != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Pod;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "fe"}},
            "spec": {"containers": [
                {"name": "a", "image": "x:1", "env": [{"name": "A", "value": "1"}]},
                {"name": "b", "image": "y:1"}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let body = json!({"spec": {"containers": [{"name": "b", "image": "y:2"}]}}).to_string();
        let p = apply(&pod(), PatchKind::Strategic, body.as_bytes()).unwrap();
        assert_eq!(p.spec.containers.len(), 2);
        assert_eq!(p.spec.containers[1].image, "y:2");
        assert_eq!(p.spec.containers[0].env.len(), 1);
        // A merge patch replaces the list instead.
        let p = apply(&pod(), PatchKind::Merge, body.as_bytes()).unwrap();
        assert_eq!(p.spec.containers.len(), 1);
    }

    #[test]
    fn strategic_merge_directives() {
        let body = json!({
            "metadata": {"labels": {"tier": null}},
            "spec": {
                "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                "containers": [{"name": "a", "$patch": "delete"}]
            }
        })
        .to_string();
        let p = apply(&pod(), PatchKind::Strategic, body.as_bytes()).unwrap();
        assert_eq!(p.spec.containers.len(), 1);
        assert_eq!(p.spec.containers[0].name, "b");
        assert!(!p.metadata.labels.contains_key("tier"));
        let body = json!({"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "x:2"}]
        }})
        .to_string();
        let p = apply(&pod(), PatchKind::Strategic, body.as_bytes()).unwrap();
        assert_eq!(p.spec.containers[0].name, "b");
        assert_eq!(p.spec.containers[1].image, "x:2");
    }

    #[test]
    fn json_patch_and_unknown_fields() {
        let body = json!([{"op": "replace", "path": "/spec/containers/0/image", "value": "x:9"}])
            .to_string();
        let p = apply(&pod(), PatchKind::Json, body.as_bytes()).unwrap();
        assert_eq!(p.spec.containers[0].image, "x:9");
        let body = json!({"spec": {"bogus": 1}}).to_string();
        let e = apply(&pod(), PatchKind::Merge, body.as_bytes()).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(e.details.causes[0].field, "spec.bogus");
        let body = json!([{"op": "remove", "path": "/spec/nothing"}]).to_string();
        assert_eq!(
            apply(&pod(), PatchKind::Json, body.as_bytes())
                .unwrap_err()
                .code,
            422
        );
    }

    #[test]
    fn only_a_resource_version_the_patch_names_is_a_precondition() {
        let mut current = pod();
        current.metadata.resource_version = "7".into();
        // No resourceVersion in the patch: no precondition (the caller
        // retries conflicts), the update carries the current one.
        let body = json!({"metadata": {"labels": {"tier": "be"}}}).to_string();
        for kind in [PatchKind::Merge, PatchKind::Strategic] {
            let (p, precondition) = apply_for_update(&current, kind, body.as_bytes()).unwrap();
            assert!(!precondition, "{kind:?}");
            assert_eq!(p.metadata.resource_version, "7");
            assert_eq!(p.metadata.labels["tier"], "be");
        }
        let ops = json!([{"op": "replace", "path": "/spec/containers/0/image", "value": "x:2"}])
            .to_string();
        assert!(
            !apply_for_update(&current, PatchKind::Json, ops.as_bytes())
                .unwrap()
                .1
        );
        // The current one named: a precondition that holds.
        let body =
            json!({"metadata": {"resourceVersion": "7", "labels": {"tier": "be"}}}).to_string();
        let (p, precondition) =
            apply_for_update(&current, PatchKind::Merge, body.as_bytes()).unwrap();
        assert!(precondition);
        assert_eq!(p.metadata.resource_version, "7");
        // A stale one: 409, nothing to retry.
        let body = json!({"metadata": {"resourceVersion": "6"}}).to_string();
        let e = apply_for_update(&current, PatchKind::Merge, body.as_bytes()).unwrap_err();
        assert_eq!(e.code, 409);
    }
}
