//! Answers: JSON bodies with their status, `Status` errors, content
//! negotiation (kubectl asks for `meta.k8s.io` Tables to print `get`),
//! and watch streams (one JSON event per line, chunked).

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::Value;

use crate::api::ApiError;

/// A JSON answer.
pub fn json(code: StatusCode, value: &Value) -> Response {
    let mut body = serde_json::to_vec(value).expect("JSON values serialize");
    body.push(b'\n');
    raw(code, "application/json", body)
}

/// An answer of `content_type`.
pub fn raw(code: StatusCode, content_type: &str, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/json")),
    );
    r
}

/// The `Status` answer of `e`.
pub fn error(e: &ApiError) -> Response {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json(code, &e.status());
    if let Some(after) = e.details.retry_after_seconds {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(after));
    }
    r
}

/// What the client accepts, as far as herd distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accept {
    /// A Table (`;as=Table;g=meta.k8s.io`), of this API version.
    pub table: Option<&'static str>,
    /// Protobuf (only the OpenAPI v2 document is served as protobuf).
    pub protobuf: bool,
}

impl Accept {
    pub fn of(headers: &HeaderMap) -> Accept {
        let accept = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let mut table = None;
        for part in accept.split(',') {
            let part = part.replace(' ', "");
            if part.contains("as=Table") && part.contains("g=meta.k8s.io") {
                if part.contains("v=v1beta1") {
                    table = table.or(Some("meta.k8s.io/v1beta1"));
                } else if part.contains("v=v1") {
                    table = Some("meta.k8s.io/v1");
                }
            }
        }
        Accept {
            table,
            protobuf: accept.contains("protobuf"),
        }
    }
}

/// A streaming answer: each item one line of JSON (a watch).
pub fn stream(items: impl Stream<Item = Value> + Send + 'static) -> Response {
    let body = items.map(|v| {
        let mut line = serde_json::to_vec(&v).expect("JSON values serialize");
        line.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(line))
    });
    let mut r = Response::new(Body::from_stream(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
