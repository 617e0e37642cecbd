//! `herd rolling-update`: kubectl 1.x's update of a ReplicationController
//! (kubectl dropped it in 1.18; the seed's demo uses it). The new RC is
//! created at 0 replicas, a `deployment` label in its selector and
//! template telling its pods from the old RC's (which gets one of its
//! own); then the new RC goes up one pod and, once that pod is ready and
//! the update period passed, the old one down one, until the new RC has
//! the replicas wanted and the old none. The old RC is deleted, and with
//! `--image` the new one takes the old name. Annotations on both RCs
//! (kubectl's own) make an interrupted update resume where it stopped
//! when the command is run again, and `--rollback` reverse it.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::client::{self, Api, MERGE_PATCH, Refused};
use super::{Conn, manifest};
use crate::api::{ApiObject, ReplicationController};

/// On the new RC: the replica count the update ends with.
pub const DESIRED: &str = "kubectl.kubernetes.io/desired-replicas";
/// On the old RC: the replica count it had before the update.
pub const ORIGINAL: &str = "kubectl.kubernetes.io/original-replicas";
/// On the old RC: the RC the update moves its pods to.
pub const NEXT: &str = "kubectl.kubernetes.io/next-controller-id";
/// On the new RC (`--image`): the name it takes once the update is done.
pub const RENAME_TO: &str = "herd.io/rename-to";
/// The label telling the two RCs' pods apart.
pub const DEPLOYMENT_KEY: &str = "deployment";

#[derive(Debug, clap::Args)]
pub struct RollingUpdateArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The ReplicationController to replace.
    pub old: String,
    /// The new RC's name (with --image; default OLD-<hash>, renamed OLD at the end).
    pub new: Option<String>,
    /// The new RC (its name must differ from OLD's).
    #[arg(short = 'f', long = "filename", conflicts_with = "image")]
    pub file: Option<PathBuf>,
    /// The image the new pods run (the old RC's pods with this image).
    #[arg(long, required_unless_present_any = ["file", "rollback"])]
    pub image: Option<String>,
    /// The container whose image changes (when the pods have several).
    #[arg(long)]
    pub container: Option<String>,
    /// How long to wait between steps.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1m")]
    pub update_period: Duration,
    /// How often to look at the pods while waiting for them.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub poll_interval: Duration,
    /// How long a step may wait for its pods to become ready.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub timeout: Duration,
    /// Abort an update in progress: the old RC back to its replicas, the new one deleted.
    #[arg(long)]
    pub rollback: bool,
}

/// Where the update goes.
#[derive(Debug, Clone)]
struct Plan {
    old: String,
    new: String,
    /// The new RC's name at the end (`--image` without a new name: the old one).
    rename_to: Option<String>,
}

/// A short, stable hash of a pod template (without the deployment
/// label), as kubectl named the new RC and labelled its pods.
pub fn template_hash(template: &Value) -> String {
    let mut t = template.clone();
    if let Some(labels) = t["metadata"]["labels"].as_object_mut() {
        labels.remove(DEPLOYMENT_KEY);
    }
    let bytes = serde_json::to_vec(&t).expect("JSON values serialize");
    // FNV-1a: stable across builds and platforms.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:08x}", (h >> 32) as u32 ^ h as u32)
}

/// `template` with `image` for `container` (the only one if `None`).
pub fn with_image(template: &Value, image: &str, container: Option<&str>) -> anyhow::Result<Value> {
    let mut t = template.clone();
    let containers = t["spec"]["containers"]
        .as_array_mut()
        .ok_or_else(|| anyhow::anyhow!("the pod template has no containers"))?;
    let index = match container {
        Some(name) => containers
            .iter()
            .position(|c| c["name"] == name)
            .ok_or_else(|| anyhow::anyhow!("the pod template has no container {name:?}"))?,
        None if containers.len() == 1 => 0,
        None => anyhow::bail!(
            "the pods have {} containers: say which with --container",
            containers.len()
        ),
    };
    if containers[index]["image"] == image {
        anyhow::bail!("the image is already {image}: give a different --image");
    }
    containers[index]["image"] = Value::String(image.to_owned());
    Ok(t)
}

fn replicas(rc: &Value) -> i64 {
    rc["spec"]["replicas"].as_i64().unwrap_or(1)
}

fn annotation<'a>(rc: &'a Value, key: &str) -> Option<&'a str> {
    rc["metadata"]["annotations"][key].as_str()
}

async fn get_rc(api: &Api, ns: &str, name: &str) -> anyhow::Result<Option<Value>> {
    match api.get(&rc_path(ns, name)).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn rc_path(ns: &str, name: &str) -> String {
    client::object(ReplicationController::INFO, ns, name)
}

async fn patch(api: &Api, ns: &str, name: &str, patch: Value) -> anyhow::Result<Value> {
    Ok(api.patch(&rc_path(ns, name), MERGE_PATCH, &patch).await?)
}

async fn sleep(cancel: &CancellationToken, d: Duration) -> anyhow::Result<()> {
    tokio::select! {
        _ = cancel.cancelled() => anyhow::bail!("interrupted; run the same command again to resume"),
        _ = tokio::time::sleep(d) => Ok(()),
    }
}

pub async fn run(args: RollingUpdateArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let api = args.conn.api().await?;
    let ns = args.conn.ns().to_owned();
    let old = get_rc(&api, &ns, &args.old).await?;
    if args.rollback {
        let Some(old) = old else {
            anyhow::bail!("replicationcontrollers \"{}\" not found", args.old);
        };
        return rollback(&api, &args, &ns, old, &cancel).await;
    }
    let Some(old) = old else {
        // Interrupted after the old RC went, before the new one took its name?
        if let Some(new) = renaming_to(&api, &ns, &args.old).await? {
            let desired = annotation(&new, DESIRED)
                .and_then(|d| d.parse().ok())
                .unwrap_or(replicas(&new));
            let from = new["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            rename(&api, &ns, &from, &args.old, desired, &args, &cancel).await?;
            println!("replicationcontroller \"{}\" rolling updated", args.old);
            return Ok(());
        }
        anyhow::bail!("replicationcontrollers \"{}\" not found", args.old);
    };
    if let Some(from) = annotation(&old, RENAMED_FROM) {
        // Interrupted while taking over the old name: finish that.
        let desired = annotation(&old, DESIRED)
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        rename(&api, &ns, from, &args.old, desired, &args, &cancel).await?;
        println!("replicationcontroller \"{}\" rolling updated", args.old);
        return Ok(());
    }
    let (plan, new_rc, desired) = plan(&api, &args, &ns, &old).await?;
    label_old(&api, &ns, &old).await?;
    let created = match get_rc(&api, &ns, &plan.new).await? {
        Some(existing) => {
            println!("Continuing update with existing controller {}.", plan.new);
            existing
        }
        None => {
            let v = api
                .create(
                    &client::collection(ReplicationController::INFO, Some(&ns)),
                    &new_rc,
                )
                .await?;
            println!("Created {}", plan.new);
            v
        }
    };
    let desired = annotation(&created, DESIRED)
        .and_then(|d| d.parse().ok())
        .unwrap_or(desired);
    let original = annotation(&old, ORIGINAL)
        .and_then(|d| d.parse().ok())
        .unwrap_or(replicas(&old));
    patch(
        &api,
        &ns,
        &plan.old,
        json!({"metadata": {"annotations": {NEXT: plan.new, ORIGINAL: original.to_string()}}}),
    )
    .await?;
    step(&api, &ns, &plan.old, &plan.new, desired, &args, &cancel).await?;
    println!("Update succeeded. Deleting {}", plan.old);
    delete_and_wait(&api, &ns, &plan.old, "Background", &args, &cancel).await?;
    match &plan.rename_to {
        Some(to) => {
            rename(&api, &ns, &plan.new, to, desired, &args, &cancel).await?;
            println!("replicationcontroller \"{to}\" rolling updated");
        }
        None => println!(
            "replicationcontroller \"{}\" rolling updated to \"{}\"",
            plan.old, plan.new
        ),
    }
    Ok(())
}

/// On the RC taking over the old name: the RC it takes over from.
pub const RENAMED_FROM: &str = "herd.io/renamed-from";

/// The new RC, its name and the replicas wanted, from the flags.
async fn plan(
    api: &Api,
    args: &RollingUpdateArgs,
    ns: &str,
    old: &Value,
) -> anyhow::Result<(Plan, Value, i64)> {
    let (mut new_rc, rename_to) = if let Some(file) = &args.file {
        let objects = manifest::load(std::slice::from_ref(file)).await?;
        let [m] = objects.as_slice() else {
            anyhow::bail!("{}: give exactly one ReplicationController", file.display());
        };
        if m.kind.kind != "ReplicationController" {
            anyhow::bail!(
                "{}: a {} is not a ReplicationController",
                file.display(),
                m.kind.kind
            );
        }
        if m.name() == args.old {
            anyhow::bail!(
                "{}: the new ReplicationController needs a name other than {}",
                file.display(),
                args.old
            );
        }
        (m.object.clone(), None)
    } else {
        let image = args.image.as_deref().unwrap_or_default();
        let template = with_image(&old["spec"]["template"], image, args.container.as_deref())?;
        let hash = template_hash(&template);
        let name = args
            .new
            .clone()
            .unwrap_or_else(|| format!("{}-{hash}", base_name(&args.old)));
        let rename_to = args.new.is_none().then(|| args.old.clone());
        let mut rc = json!({
            "apiVersion": "v1",
            "kind": "ReplicationController",
            "metadata": {"name": name, "labels": old["metadata"]["labels"]},
            "spec": {"replicas": replicas(old), "selector": old["spec"]["selector"], "template": template},
        });
        if rc["metadata"]["labels"].is_null()
            && let Some(m) = rc["metadata"].as_object_mut()
        {
            m.remove("labels");
        }
        (rc, rename_to)
    };
    let desired = new_rc["spec"]["replicas"]
        .as_i64()
        .unwrap_or_else(|| replicas(old));
    let new_name = new_rc["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if let Some(next) = annotation(old, NEXT)
        && next != new_name
        && get_rc(api, ns, next).await?.is_some()
    {
        anyhow::bail!(
            "an update of {} to {next} is in progress: finish it (run it again) or abort it with --rollback",
            args.old
        );
    }
    let hash = template_hash(&new_rc["spec"]["template"]);
    new_rc["metadata"]["namespace"] = json!(ns);
    new_rc["spec"]["replicas"] = json!(0);
    new_rc["spec"]["selector"][DEPLOYMENT_KEY] = json!(hash);
    new_rc["spec"]["template"]["metadata"]["labels"][DEPLOYMENT_KEY] = json!(hash);
    new_rc["metadata"]["annotations"][DESIRED] = json!(desired.to_string());
    if let Some(to) = &rename_to {
        new_rc["metadata"]["annotations"][RENAME_TO] = json!(to);
    }
    Ok((
        Plan {
            old: args.old.clone(),
            new: new_name,
            rename_to,
        },
        new_rc,
        desired,
    ))
}

/// `web-1a2b3c4d` → `web`: a name an earlier `--image` update gave.
fn base_name(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((base, hash)) if hash.len() == 8 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            base
        }
        _ => name,
    }
}

/// Gives the old RC's pods a deployment label of their own (template,
/// then pods, then selector, so no pod is ever outside its RC), as kubectl did.
async fn label_old(api: &Api, ns: &str, old: &Value) -> anyhow::Result<()> {
    let name = old["metadata"]["name"].as_str().unwrap_or_default();
    if old["spec"]["selector"][DEPLOYMENT_KEY].is_string() {
        return Ok(());
    }
    let hash = template_hash(&old["spec"]["template"]);
    patch(
        api,
        ns,
        name,
        json!({"spec": {"template": {"metadata": {"labels": {DEPLOYMENT_KEY: hash}}}}}),
    )
    .await?;
    let selector: Vec<String> = old["spec"]["selector"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    let pods_path = format!(
        "{}?labelSelector={}",
        client::collection(crate::api::Pod::INFO, Some(ns)),
        percent_encoding::utf8_percent_encode(
            &selector.join(","),
            percent_encoding::NON_ALPHANUMERIC
        )
    );
    let uid = old["metadata"]["uid"].as_str().unwrap_or_default();
    for pod in api.get(&pods_path).await?["items"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let owned = pod["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["uid"] == uid);
        let orphan = pod["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(Vec::is_empty);
        if owned || orphan {
            let pname = pod["metadata"]["name"].as_str().unwrap_or_default();
            let path = client::object(crate::api::Pod::INFO, ns, pname);
            match api
                .patch(
                    &path,
                    MERGE_PATCH,
                    &json!({"metadata": {"labels": {DEPLOYMENT_KEY: hash}}}),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    patch(
        api,
        ns,
        name,
        json!({"spec": {"selector": {DEPLOYMENT_KEY: hash}}}),
    )
    .await?;
    Ok(())
}

/// Moves the pods from `from` to `to` one at a time until `to` has
/// `desired` replicas and `from` none.
async fn step(
    api: &Api,
    ns: &str,
    from: &str,
    to: &str,
    desired: i64,
    args: &RollingUpdateArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let gone =
        |n: &str| anyhow::anyhow!("replicationcontroller {n:?} disappeared during the update");
    let f = get_rc(api, ns, from).await?.ok_or_else(|| gone(from))?;
    let t = get_rc(api, ns, to).await?.ok_or_else(|| gone(to))?;
    let (mut have_from, mut have_to) = (replicas(&f), replicas(&t));
    println!(
        "Scaling up {to} from {have_to} to {desired}, scaling down {from} from {have_from} to 0 (keep {desired} pods available, don't exceed {} pods)",
        desired + 1
    );
    // A resumed update first waits for the step it was interrupted in.
    wait_ready(api, ns, to, have_to, args, cancel).await?;
    while have_to < desired || have_from > 0 {
        if have_to < desired {
            have_to += 1;
            patch(api, ns, to, json!({"spec": {"replicas": have_to}})).await?;
            println!("Scaling {to} up to {have_to}");
            wait_ready(api, ns, to, have_to, args, cancel).await?;
        }
        if have_from > 0 {
            // One old pod goes for each new one ready (never fewer than
            // `desired` pods available, at most one more than that).
            have_from -= 1;
            patch(api, ns, from, json!({"spec": {"replicas": have_from}})).await?;
            println!("Scaling {from} down to {have_from}");
        }
        if have_to < desired || have_from > 0 {
            sleep(cancel, args.update_period).await?;
        }
    }
    Ok(())
}

/// Waits until `name` has `n` ready pods (and has seen its latest spec).
async fn wait_ready(
    api: &Api,
    ns: &str,
    name: &str,
    n: i64,
    args: &RollingUpdateArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let path = rc_path(ns, name);
    let ready = tokio::time::timeout(
        args.timeout,
        client::poll(cancel, args.poll_interval, || async {
            let rc = api.get(&path).await?;
            let seen = rc["status"]["observedGeneration"].as_i64().unwrap_or(0)
                >= rc["metadata"]["generation"].as_i64().unwrap_or(0);
            let ready = rc["status"]["readyReplicas"].as_i64().unwrap_or(0);
            Ok((seen && ready >= n).then_some(()))
        }),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "timed out after {:?} waiting for {n} ready pods of {name}",
            args.timeout
        )
    })??;
    if ready.is_none() {
        anyhow::bail!("interrupted; run the same command again to resume");
    }
    Ok(())
}

async fn delete_and_wait(
    api: &Api,
    ns: &str,
    name: &str,
    policy: &str,
    args: &RollingUpdateArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let path = rc_path(ns, name);
    match api.delete(&path, policy).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let done = tokio::time::timeout(
        args.timeout,
        client::poll(cancel, args.poll_interval, || async {
            match api.get(&path).await {
                Err(e) if e.is_not_found() => Ok(Some(())),
                Err(e) => Err(e),
                Ok(_) => Ok(None),
            }
        }),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out waiting for {name} to be deleted"))??;
    if done.is_none() {
        anyhow::bail!("interrupted; run the same command again to resume");
    }
    Ok(())
}

/// The RC (if any) that an interrupted `--image` update meant to name `old`.
async fn renaming_to(api: &Api, ns: &str, old: &str) -> anyhow::Result<Option<Value>> {
    let list = api
        .get(&client::collection(ReplicationController::INFO, Some(ns)))
        .await?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|rc| annotation(rc, RENAME_TO) == Some(old))
        .cloned())
}

/// A label only the placeholder RC's selector has while a rename is under
/// way, so it adopts none of the pods until it takes them over.
pub const RENAME_PENDING: &str = "herd.io/rename-pending";

/// Gives `from`'s pods to a new RC named `to`, never doubling nor losing
/// one: `to` is made first, its selector matching nothing yet (so an
/// interruption loses nothing: the spec is kept in it); then `from` is
/// deleted orphaning its pods; then one update gives `to` the real
/// selector and the replica count, and it adopts the orphans.
async fn rename(
    api: &Api,
    ns: &str,
    from: &str,
    to: &str,
    desired: i64,
    args: &RollingUpdateArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    if get_rc(api, ns, to).await?.is_none() {
        let Some(src) = get_rc(api, ns, from).await? else {
            anyhow::bail!("neither {from} nor {to} exists: nothing to rename");
        };
        println!("Renaming {from} to {to}");
        let mut annotations = src["metadata"]["annotations"].clone();
        if let Some(a) = annotations.as_object_mut() {
            a.remove(RENAME_TO);
            a.insert(RENAMED_FROM.into(), json!(from));
            a.insert(DESIRED.into(), json!(desired.to_string()));
        }
        let mut rc = json!({
            "apiVersion": "v1",
            "kind": "ReplicationController",
            "metadata": {"name": to, "namespace": ns, "annotations": annotations},
            "spec": {"replicas": 0, "selector": src["spec"]["selector"], "template": src["spec"]["template"]},
        });
        rc["spec"]["selector"][RENAME_PENDING] = json!("true");
        rc["spec"]["template"]["metadata"]["labels"][RENAME_PENDING] = json!("true");
        if !src["metadata"]["labels"].is_null() {
            rc["metadata"]["labels"] = src["metadata"]["labels"].clone();
        }
        match api
            .create(
                &client::collection(ReplicationController::INFO, Some(ns)),
                &rc,
            )
            .await
        {
            Ok(_) => {}
            Err(client::CallError::Refused(Refused { code: 409, .. })) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The garbage collector removes the pods' references to `from` before
    // `from` itself goes: once it is gone, they are orphans.
    delete_and_wait(api, ns, from, "Orphan", args, cancel).await?;
    patch(
        api,
        ns,
        to,
        json!({
            "metadata": {"annotations": {RENAMED_FROM: null}},
            "spec": {
                "replicas": desired,
                "selector": {RENAME_PENDING: null},
                "template": {"metadata": {"labels": {RENAME_PENDING: null}}},
            },
        }),
    )
    .await?;
    Ok(())
}

/// `--rollback`: the update in progress run backwards, then the new RC deleted.
async fn rollback(
    api: &Api,
    args: &RollingUpdateArgs,
    ns: &str,
    old: Value,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let Some(next) = annotation(&old, NEXT).map(str::to_owned) else {
        anyhow::bail!("{} has no update in progress to roll back", args.old);
    };
    let original = annotation(&old, ORIGINAL)
        .and_then(|d| d.parse().ok())
        .unwrap_or(replicas(&old));
    if get_rc(api, ns, &next).await?.is_some() {
        println!("Rolling back {next} to {}", args.old);
        step(api, ns, &next, &args.old, original, args, cancel).await?;
        delete_and_wait(api, ns, &next, "Background", args, cancel).await?;
    } else {
        patch(api, ns, &args.old, json!({"spec": {"replicas": original}})).await?;
    }
    patch(
        api,
        ns,
        &args.old,
        json!({"metadata": {"annotations": {NEXT: null, ORIGINAL: null}}}),
    )
    .await?;
    println!("replicationcontroller \"{}\" rolled back", args.old);
    Ok(())
}

#[cfg(test)]
mod tests;
