//! The Omaha v3 update protocol as update_engine and Nebraska speak it:
//! the client POSTs a `<request>` naming its app, version, track (herd's
//! group), boot and machine ids, with an `<updatecheck/>`, a `<ping/>` and
//! `<event>`s; the server answers with a `<response>` whose `updatecheck`
//! is `noupdate` or `ok` with the payload's URLs, sizes and SHA-256 hashes.
//!
//! Both sides parse at the edge: [`Request::parse`] and [`Response::parse`]
//! turn XML into typed values or an error naming the element or attribute
//! that was wrong; nothing downstream sees raw XML. Unknown attributes and
//! elements are ignored (update_engine sends many herd has no use for);
//! a missing or malformed one that herd needs is an error.

pub mod codes;
pub mod request;
pub mod response;
pub mod version;
mod wire;

pub use codes::{Cause, EventResult, EventType};
pub use request::{App, Event, Os, Request};
pub use response::{AppResponse, AppStatus, Package, Response, Update, UpdateCheck};
pub use version::Version;

/// The Omaha app id of the herd OS (update_engine's `appid`), as Flatcar's
/// is `e96281a6-d1af-4bde-9a0a-97b76e56dc57`.
pub const APP_ID: &str = "{8b4ab3f4-7d2c-4c3e-9a5e-5f0d2b8e6a11}";

/// The largest document either side parses: Omaha documents are a few
/// hundred bytes, a bigger one is misbehaving.
pub const MAX_DOCUMENT: usize = 64 * 1024;

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OmahaError {
    #[error("Omaha {document}: {len} bytes is more than the {max} allowed")]
    TooLarge {
        document: &'static str,
        len: usize,
        max: usize,
    },
    #[error("Omaha {document}: not well-formed XML: {reason}")]
    Xml {
        document: &'static str,
        reason: String,
    },
    #[error("Omaha {document}: {reason}")]
    Malformed {
        document: &'static str,
        reason: String,
    },
}

/// The XML declaration both sides put first.
const DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// Checks size and root element, then decodes `text` into the wire type.
fn decode<T: serde::de::DeserializeOwned>(
    document: &'static str,
    text: &[u8],
) -> Result<T, OmahaError> {
    if text.len() > MAX_DOCUMENT {
        return Err(OmahaError::TooLarge {
            document,
            len: text.len(),
            max: MAX_DOCUMENT,
        });
    }
    let text = std::str::from_utf8(text).map_err(|e| OmahaError::Xml {
        document,
        reason: format!("not UTF-8: {e}"),
    })?;
    let root = root_element(text).map_err(|reason| OmahaError::Xml { document, reason })?;
    if root != document {
        return Err(OmahaError::Malformed {
            document,
            reason: format!("the root element is <{root}>, expected <{document}>"),
        });
    }
    quick_xml::de::from_str(text).map_err(|e| match e {
        quick_xml::DeError::InvalidXml(x) => OmahaError::Xml {
            document,
            reason: x.to_string(),
        },
        other => OmahaError::Malformed {
            document,
            // serde names attributes `@name`: say what they are.
            reason: other
                .to_string()
                .replace("field `@", "attribute `")
                .replace("`@", "attribute `"),
        },
    })
}

/// The name of the first element, checking the whole document is well formed.
fn root_element(text: &str) -> Result<String, String> {
    use quick_xml::events::Event as X;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut root = None;
    let mut depth = 0usize;
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            X::Start(e) => {
                if root.is_none() {
                    root = Some(e.name().as_ref().to_owned());
                } else if depth == 0 {
                    return Err("more than one root element".into());
                }
                depth += 1;
            }
            X::Empty(e) => {
                if root.is_none() {
                    root = Some(e.name().as_ref().to_owned());
                } else if depth == 0 {
                    return Err("more than one root element".into());
                }
            }
            X::End(_) => depth = depth.saturating_sub(1),
            X::Text(t) if depth == 0 && !t.trim().is_empty() => {
                return Err("text outside the root element".into());
            }
            X::DocType(_) => return Err("a DOCTYPE is not allowed".into()),
            X::Eof => break,
            _ => {}
        }
    }
    if depth != 0 {
        return Err("the document ends inside an element".into());
    }
    root.ok_or_else(|| "no root element".into())
}

/// Encodes a wire value with the XML declaration.
fn encode<T: serde::Serialize>(value: &T) -> String {
    let body = quick_xml::se::to_string(value).expect("Omaha wire types serialize");
    format!("{DECLARATION}{body}\n")
}

fn malformed(document: &'static str, reason: impl Into<String>) -> OmahaError {
    OmahaError::Malformed {
        document,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_checked() {
        assert_eq!(root_element("<a><b/></a>").unwrap(), "a");
        assert!(root_element("<a></a><b/>").is_err());
        assert!(root_element("<a>").is_err());
        assert!(root_element("x<a/>").is_err());
        assert!(root_element("<!DOCTYPE a><a/>").is_err());
        assert!(root_element("").is_err());
    }
}
