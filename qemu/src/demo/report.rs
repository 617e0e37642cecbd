//! The demo's summary: each step, its result and its time; a failed step
//! with the command it ran last and what was expected.

use std::time::Duration;

/// How one step went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub step: u8,
    pub title: &'static str,
    #[serde(serialize_with = "secs")]
    pub took: Duration,
    /// What it proved, or why it failed.
    pub ok: bool,
    pub result: String,
    /// The last command a failed step ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 10.0).round() / 10.0)
}

/// The summary as the demo prints it at the end.
pub fn summary(outcomes: &[Outcome]) -> String {
    let mut t = herd_cli::Table::new(["STEP", "RESULT", "TIME", "WHAT"]);
    for o in outcomes {
        t.row([
            format!("{} {}", o.step, o.title),
            if o.ok { "ok" } else { "FAILED" }.to_string(),
            format!("{:.1} s", o.took.as_secs_f64()),
            o.result.lines().next().unwrap_or_default().to_owned(),
        ]);
    }
    let total: Duration = outcomes.iter().map(|o| o.took).sum();
    let mut out = t.render();
    out.push_str(&format!("total {:.1} s\n", total.as_secs_f64()));
    if let Some(failed) = outcomes.iter().find(|o| !o.ok) {
        out.push_str(&format!(
            "\nstep {} ({}) failed\n  command:  {}\n  {}\n",
            failed.step,
            failed.title,
            failed.command.as_deref().unwrap_or("-"),
            failed.result.replace('\n', "\n  ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_its_step_command_and_expectation() {
        let outcomes = [
            Outcome {
                step: 1,
                title: "postgres",
                took: Duration::from_millis(1500),
                ok: true,
                result: "psql on m2 reached postgres".into(),
                command: None,
            },
            Outcome {
                step: 2,
                title: "pgview",
                took: Duration::from_secs(3),
                ok: false,
                result: "expected an answer from pgview v1 within 180s; last seen: refused".into(),
                command: Some("herd lab exec -- curl http://10.0.0.9/".into()),
            },
        ];
        let s = summary(&outcomes);
        assert!(
            s.contains("1 postgres") && s.contains("ok") && s.contains("1.5 s"),
            "{s}"
        );
        assert!(s.contains("step 2 (pgview) failed"), "{s}");
        assert!(
            s.contains("command:  herd lab exec -- curl http://10.0.0.9/"),
            "{s}"
        );
        assert!(s.contains("expected an answer from pgview v1"), "{s}");
        assert!(s.contains("total 4.5 s"), "{s}");
    }
}
