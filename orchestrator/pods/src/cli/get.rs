//! `herd get` (the server's own Tables, as kubectl prints them; JSON or
//! YAML objects; `-w` to follow changes) and `herd describe` (an object's
//! metadata, spec and status, and the events about it).

use herd_cli::{Output, Table};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::client::{self, TABLE};
use super::{Conn, kind_and_name, kind_named};
use crate::api::KindInfo;

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// pods, rc, rs, deploy, svc, ep, nodes, ns, events (or KIND/NAME).
    pub kind: String,
    /// Only these objects.
    pub names: Vec<String>,
    /// Label selector (`app=web,tier!=db`, `env in (a,b)`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector (`status.phase=Running`, `spec.nodeName=node-a`).
    #[arg(long)]
    pub field_selector: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// After listing, print each change until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// The extra columns (kubectl's `-o wide`).
    #[arg(long)]
    pub wide: bool,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

/// The query string of a list.
fn query(selector: Option<&str>, fields: Option<&str>) -> String {
    let mut q = Vec::new();
    for (key, value) in [("labelSelector", selector), ("fieldSelector", fields)] {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            q.push(format!(
                "{key}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            ));
        }
    }
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

/// A server-side Table printed as kubectl prints it: the columns of
/// priority 0 (all with `wide`), a NAMESPACE column first when asked.
pub fn render_table(table: &Value, wide: bool, namespaces: bool, header: bool) -> String {
    let columns: Vec<(usize, String)> = table["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, c)| wide || c["priority"].as_u64().unwrap_or(0) == 0)
        .map(|(i, c)| (i, c["name"].as_str().unwrap_or("").to_ascii_uppercase()))
        .collect();
    let mut head: Vec<String> = columns.iter().map(|(_, n)| n.clone()).collect();
    if namespaces {
        head.insert(0, "NAMESPACE".into());
    }
    let mut t = Table::new(head);
    for row in table["rows"].as_array().into_iter().flatten() {
        let mut cells: Vec<String> = columns
            .iter()
            .map(|(i, _)| cell(&row["cells"][*i]))
            .collect();
        if namespaces {
            cells.insert(
                0,
                row["object"]["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            );
        }
        t.row(cells);
    }
    let text = t.render();
    if header {
        text
    } else {
        text.split_once('\n')
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or_default()
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "<none>".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints `value` in a structured format (watch events: one document each).
fn print_structured(output: Output, value: &Value) -> anyhow::Result<()> {
    match output {
        Output::Yaml => print!("---\n{}", output.render(value, |_| String::new())?),
        _ => output.print(value, |_| String::new())?,
    }
    Ok(())
}

pub async fn get(args: GetArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let api = args.conn.api().await?;
    let (kind, mut names) = match args.kind.split_once('/') {
        Some(_) => {
            let (k, n) = kind_and_name(&args.kind, None)?;
            (k, vec![n])
        }
        None => (kind_named(&args.kind)?, Vec::new()),
    };
    names.extend(args.names.iter().cloned());
    let namespace = (!args.all_namespaces).then(|| args.conn.ns().to_owned());
    let show_ns = args.all_namespaces && kind.namespaced;
    let coll = client::collection(kind, namespace.as_deref());
    let q = query(args.selector.as_deref(), args.field_selector.as_deref());

    // What is there now.
    let (listed, revision) = if names.is_empty() {
        let path = format!("{coll}{q}");
        let v = if args.output.is_structured() {
            api.get(&path).await?
        } else {
            api.get_table(&path).await?
        };
        let rev = v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        (v, rev)
    } else {
        let mut items = Vec::new();
        let mut rows = Vec::new();
        let mut columns = Value::Null;
        for name in &names {
            let path = format!("{coll}/{name}");
            if args.output.is_structured() {
                items.push(api.get(&path).await?);
            } else {
                let t = api.get_table(&path).await?;
                columns = t["columnDefinitions"].clone();
                rows.extend(t["rows"].as_array().cloned().unwrap_or_default());
            }
        }
        let v = match (args.output.is_structured(), items.len()) {
            (true, 1) => items.remove(0),
            (true, _) => {
                json!({"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items})
            }
            (false, _) => json!({"columnDefinitions": columns, "rows": rows}),
        };
        (v, String::new())
    };
    if args.output.is_structured() {
        print_structured(args.output, &listed)?;
    } else if listed["rows"].as_array().is_none_or(Vec::is_empty) && !args.watch {
        match &namespace {
            Some(ns) if kind.namespaced => eprintln!("No resources found in {ns} namespace."),
            _ => eprintln!("No resources found"),
        }
    } else {
        print!("{}", render_table(&listed, args.wide, show_ns, true));
    }
    if args.watch {
        let names_q = if names.len() == 1 {
            format!("fieldSelector=metadata.name%3D{}", names[0])
        } else {
            String::new()
        };
        let q = match (q.is_empty(), names_q.is_empty()) {
            (_, true) => q,
            (true, false) => format!("?{names_q}"),
            (false, false) => format!("{q}&{names_q}"),
        };
        follow(
            &api,
            kind,
            &format!("{coll}{q}"),
            &revision,
            &args,
            show_ns,
            shutdown,
        )
        .await?;
    }
    Ok(())
}

/// Prints each change after `revision` until interrupted.
async fn follow(
    api: &client::Api,
    kind: &KindInfo,
    path: &str,
    revision: &str,
    args: &GetArgs,
    show_ns: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let accept = if args.output.is_structured() {
        "application/json"
    } else {
        TABLE
    };
    let mut watch = api.watch(path, revision, accept).await?;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            e = watch.next() => e?,
        };
        let Some(event) = event else {
            anyhow::bail!("the server ended the watch of {}", kind.plural);
        };
        if args.output.is_structured() {
            print_structured(args.output, &event.object)?;
        } else {
            print!("{}", render_table(&event.object, args.wide, show_ns, false));
        }
        use std::io::Write;
        std::io::stdout().flush()?;
    }
}

#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The kind (or KIND/NAME).
    pub kind: String,
    pub name: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

pub async fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let api = args.conn.api().await?;
    let (kind, name) = kind_and_name(&args.kind, args.name.as_deref())?;
    let ns = args.conn.ns();
    let object = api.get(&client::object(kind, ns, &name)).await?;
    let mut fields = format!(
        "involvedObject.kind={},involvedObject.name={name}",
        kind.kind
    );
    if kind.namespaced {
        fields.push_str(&format!(",involvedObject.namespace={ns}"));
    }
    let event_kind = kind_named("events")?;
    let events = api
        .get(&format!(
            "{}{}",
            client::collection(event_kind, kind.namespaced.then_some(ns)),
            query(None, Some(&fields))
        ))
        .await?;
    let mut events = events["items"].as_array().cloned().unwrap_or_default();
    events.sort_by_key(|e| event_time(e).to_owned());
    let described = json!({"object": object, "events": events});
    args.output.print(&described, |d| {
        describe_text(
            &d["object"],
            d["events"].as_array().map(Vec::as_slice).unwrap_or(&[]),
        )
    })?;
    Ok(())
}

fn event_time(e: &Value) -> &str {
    e["lastTimestamp"]
        .as_str()
        .or(e["eventTime"].as_str())
        .or(e["metadata"]["creationTimestamp"].as_str())
        .unwrap_or("")
}

/// kubectl describe's shape: metadata first, then spec and status as
/// nested keys, then the events.
pub fn describe_text(object: &Value, events: &[Value]) -> String {
    let meta = &object["metadata"];
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| {
        out.push_str(&format!("{:<20}{v}\n", format!("{k}:")))
    };
    line(&mut out, "Name", meta["name"].as_str().unwrap_or("").into());
    if let Some(ns) = meta["namespace"].as_str() {
        line(&mut out, "Namespace", ns.into());
    }
    for (title, key) in [("Labels", "labels"), ("Annotations", "annotations")] {
        let pairs: Vec<String> = meta[key]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !k.ends_with("last-applied-configuration"))
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        let text = if pairs.is_empty() {
            "<none>".into()
        } else {
            pairs.join("\n                    ")
        };
        line(&mut out, title, text);
    }
    line(
        &mut out,
        "CreationTimestamp",
        meta["creationTimestamp"].as_str().unwrap_or("").into(),
    );
    if let Some(owners) = meta["ownerReferences"].as_array() {
        let o: Vec<String> = owners
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or(""),
                    o["name"].as_str().unwrap_or("")
                )
            })
            .collect();
        line(&mut out, "Controlled By", o.join(", "));
    }
    for (title, key) in [("Spec", "spec"), ("Status", "status")] {
        if object[key].is_null() || object[key] == json!({}) {
            continue;
        }
        out.push_str(&format!("{title}:\n"));
        let yaml = serde_saphyr::to_string(&object[key]).unwrap_or_default();
        for l in yaml.lines() {
            out.push_str("  ");
            out.push_str(l);
            out.push('\n');
        }
    }
    for key in ["subsets", "data"] {
        if !object[key].is_null() {
            out.push_str(&format!("{}:\n", capitalise(key)));
            for l in serde_saphyr::to_string(&object[key])
                .unwrap_or_default()
                .lines()
            {
                out.push_str(&format!("  {l}\n"));
            }
        }
    }
    if events.is_empty() {
        out.push_str("Events:             <none>\n");
    } else {
        out.push_str("Events:\n");
        let mut t = Table::new(["  TYPE", "REASON", "COUNT", "FROM", "MESSAGE"]);
        for e in events {
            t.row([
                format!("  {}", e["type"].as_str().unwrap_or("Normal")),
                e["reason"].as_str().unwrap_or("").to_owned(),
                e["count"].as_i64().unwrap_or(1).to_string(),
                e["source"]["component"].as_str().unwrap_or("").to_owned(),
                e["message"].as_str().unwrap_or("").to_owned(),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Value {
        json!({
            "columnDefinitions": [
                {"name": "Name", "priority": 0},
                {"name": "Ready", "priority": 0},
                {"name": "IP", "priority": 1},
            ],
            "rows": [
                {"cells": ["web-1", "1/1", "10.1.0.2"], "object": {"metadata": {"namespace": "a"}}},
                {"cells": ["db", "0/1", null], "object": {"metadata": {"namespace": "b"}}},
            ]
        })
    }

    #[test]
    fn tables_print_as_kubectl_prints_them() {
        assert_eq!(
            render_table(&table(), false, false, true),
            "NAME   READY\nweb-1  1/1\ndb     0/1\n"
        );
        assert_eq!(
            render_table(&table(), true, true, true),
            "NAMESPACE  NAME   READY  IP\na          web-1  1/1    10.1.0.2\nb          db     0/1    <none>\n"
        );
        assert_eq!(
            render_table(&table(), false, false, false),
            "web-1  1/1\ndb     0/1\n"
        );
    }

    #[test]
    fn selectors_are_escaped_into_the_query() {
        assert_eq!(query(None, None), "");
        assert_eq!(query(Some("app=web"), None), "?labelSelector=app%3Dweb");
        assert_eq!(
            query(Some("env in (a,b)"), Some("status.phase=Running")),
            "?labelSelector=env%20in%20%28a%2Cb%29&fieldSelector=status%2Ephase%3DRunning"
        );
    }

    #[test]
    fn describe_shows_metadata_spec_status_and_events() {
        let object = json!({
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"replicas": 2},
            "status": {"replicas": 1},
        });
        let events = [
            json!({"type": "Normal", "reason": "SuccessfulCreate", "count": 1,
                             "source": {"component": "replication-controller"}, "message": "Created pod: web-x"}),
        ];
        let text = describe_text(&object, &events);
        assert!(text.contains("Name:               web\n"), "{text}");
        assert!(text.contains("Labels:             app=web\n"), "{text}");
        assert!(text.contains("Annotations:        <none>\n"), "{text}");
        assert!(text.contains("Spec:\n  replicas: 2\n"), "{text}");
        assert!(text.contains("SuccessfulCreate"), "{text}");
        assert!(text.contains("Created pod: web-x"), "{text}");
        assert!(describe_text(&object, &[]).ends_with("Events:             <none>\n"));
    }
}
