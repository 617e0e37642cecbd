//! etcdctl's `txn` input form, parsed: compares, a blank line, success
//! operations, a blank line, failure operations.

use anyhow::{Context, bail};

use herd_client::prefix_end;
use herd_client::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, compare,
    request_op,
};

use super::args::parse_lease;

/// Parses etcdctl's interactive transaction form.
pub(super) fn parse_txn(input: &str) -> anyhow::Result<TxnRequest> {
    let mut sections = vec![Vec::new()];
    for line in input.lines() {
        let line = line.trim();
        if line.is_empty() {
            if sections.len() < 3 {
                sections.push(Vec::new());
            }
            continue;
        }
        sections
            .last_mut()
            .expect("one section at least")
            .push(line);
    }
    sections.resize(3, Vec::new());
    let compare = sections[0]
        .iter()
        .map(|l| parse_compare(l))
        .collect::<anyhow::Result<_>>()?;
    let success = sections[1]
        .iter()
        .map(|l| parse_op(l))
        .collect::<anyhow::Result<_>>()?;
    let failure = sections[2]
        .iter()
        .map(|l| parse_op(l))
        .collect::<anyhow::Result<_>>()?;
    Ok(TxnRequest {
        compare,
        success,
        failure,
    })
}

/// Splits a line into words, honouring double quotes.
fn words(line: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if quoted {
        bail!("unterminated quote in {line:?}");
    }
    if any {
        out.push(cur);
    }
    Ok(out)
}

fn parse_compare(line: &str) -> anyhow::Result<Compare> {
    // e.g. value("key") = "v", mod("key") > "3"
    let (target, rest) = line
        .split_once('(')
        .with_context(|| format!("bad compare {line:?}: expected target(\"key\") op \"value\""))?;
    let (key, rest) = rest
        .split_once(')')
        .with_context(|| format!("bad compare {line:?}: missing ')'"))?;
    let key = key.trim().trim_matches('"').as_bytes().to_vec();
    let parts = words(rest)?;
    let [op, operand] = parts.as_slice() else {
        bail!("bad compare {line:?}: expected an operator and an operand")
    };
    let result = match op.as_str() {
        "=" | "==" => compare::CompareResult::Equal,
        "!=" => compare::CompareResult::NotEqual,
        ">" => compare::CompareResult::Greater,
        "<" => compare::CompareResult::Less,
        other => bail!("bad compare {line:?}: unknown operator {other:?}"),
    };
    let num = || {
        operand
            .parse::<i64>()
            .with_context(|| format!("bad compare {line:?}: {operand:?} is not a number"))
    };
    let (target, union) = match target.trim() {
        "ver" | "version" => (
            compare::CompareTarget::Version,
            compare::TargetUnion::Version(num()?),
        ),
        "c" | "create" => (
            compare::CompareTarget::Create,
            compare::TargetUnion::CreateRevision(num()?),
        ),
        "m" | "mod" => (
            compare::CompareTarget::Mod,
            compare::TargetUnion::ModRevision(num()?),
        ),
        "val" | "value" => (
            compare::CompareTarget::Value,
            compare::TargetUnion::Value(operand.as_bytes().to_vec()),
        ),
        "lease" => (
            compare::CompareTarget::Lease,
            compare::TargetUnion::Lease(parse_lease(operand).map_err(anyhow::Error::msg)?),
        ),
        other => bail!("bad compare {line:?}: unknown target {other:?}"),
    };
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key,
        target_union: Some(union),
        range_end: Vec::new(),
    })
}

fn parse_op(line: &str) -> anyhow::Result<RequestOp> {
    let parts = words(line)?;
    let request = match parts
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["put", key, value] => request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
        ["get", key] => request_op::Request::RequestRange(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }),
        ["get", key, "--prefix"] => request_op::Request::RequestRange(RangeRequest {
            key: key.as_bytes().to_vec(),
            range_end: prefix_end(key.as_bytes()),
            ..Default::default()
        }),
        ["del", key] => request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }),
        ["del", key, "--prefix"] => request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            range_end: prefix_end(key.as_bytes()),
            ..Default::default()
        }),
        _ => bail!(
            "bad operation {line:?}: expected `put KEY VALUE`, `get KEY [--prefix]` or `del KEY [--prefix]`"
        ),
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_etcdctl_txn_form() {
        let txn = parse_txn("mod(\"k\") > \"0\"\nvalue(\"k\") = \"a b\"\n\nput k \"new value\"\nget other\n\ndel k\n").unwrap();
        assert_eq!(txn.compare.len(), 2);
        assert_eq!(
            txn.compare[1].target_union,
            Some(compare::TargetUnion::Value(b"a b".to_vec()))
        );
        assert_eq!(txn.success.len(), 2);
        assert_eq!(txn.failure.len(), 1);
    }

    #[test]
    fn rejects_bad_txn_lines_with_the_line_in_the_message() {
        let err = parse_txn("size(\"k\") = \"1\"\n").unwrap_err().to_string();
        assert!(err.contains("unknown target"), "{err}");
        let err = parse_txn("\nfrob k\n").unwrap_err().to_string();
        assert!(err.contains("frob k"), "{err}");
    }
}
