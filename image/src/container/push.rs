//! `herd image push`: an OCI layout's image into a registry through the
//! distribution API v2 — each blob checked with HEAD and uploaded when
//! missing (POST for an upload URL, then one monolithic PUT with its
//! digest), then the manifest PUT under the tag. Blobs are checked against
//! their digests before they leave the machine.

use super::layout::{self, Descriptor, LayoutError};
use super::reference::Reference;
use herd_http::{Method, Request, StatusCode};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("registry {registry}: {source}")]
    Http {
        registry: String,
        #[source]
        source: herd_http::Error,
    },
    #[error("registry {registry}: {what}: {status}: {body}")]
    Refused {
        registry: String,
        what: String,
        status: StatusCode,
        body: String,
    },
    #[error("registry {registry}: {what}: the answer has no Location header")]
    NoLocation { registry: String, what: String },
}

/// How one blob went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BlobPush {
    pub digest: String,
    pub size: u64,
    /// `false`: the registry already had it.
    pub uploaded: bool,
}

/// What was pushed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pushed {
    pub reference: String,
    /// The manifest's digest: `REGISTRY/NAME@DIGEST` names this exact image.
    pub digest: String,
    pub blobs: Vec<BlobPush>,
}

/// Pushes the image in the layout at `dir` to `reference`; `insecure`
/// speaks plain HTTP to the registry (a lab's or a loopback registry).
pub async fn push(
    client: &herd_http::Client,
    dir: &Path,
    reference: &Reference,
    insecure: bool,
) -> Result<Pushed, PushError> {
    let image = {
        let dir = dir.to_path_buf();
        let tag = reference.tag.clone();
        tokio::task::spawn_blocking(move || layout::open(&dir, Some(&tag)))
            .await
            .expect("reading a layout does not panic")?
    };
    let registry = Registry {
        client,
        base: format!(
            "{}://{}",
            if insecure { "http" } else { "https" },
            reference.registry
        ),
        reference,
    };
    let mut blobs = Vec::new();
    for d in std::iter::once(&image.manifest.config).chain(&image.manifest.layers) {
        blobs.push(registry.push_blob(dir, d).await?);
    }
    let url = format!(
        "{}/v2/{}/manifests/{}",
        registry.base, reference.name, reference.tag
    );
    let resp = registry
        .send(
            Request::new(Method::PUT, url)
                .header("content-type", &image.manifest_descriptor.media_type)
                .body(image.manifest_bytes.clone()),
        )
        .await?;
    registry.expect(&resp, StatusCode::CREATED, "PUT manifest")?;
    Ok(Pushed {
        reference: reference.to_string(),
        digest: image.manifest_descriptor.digest,
        blobs,
    })
}

struct Registry<'a> {
    client: &'a herd_http::Client,
    base: String,
    reference: &'a Reference,
}

impl Registry<'_> {
    async fn send(&self, req: Request) -> Result<herd_http::Response, PushError> {
        self.client
            .fetch(req)
            .await
            .map_err(|source| PushError::Http {
                registry: self.reference.registry.clone(),
                source,
            })
    }

    fn expect(
        &self,
        resp: &herd_http::Response,
        want: StatusCode,
        what: &str,
    ) -> Result<(), PushError> {
        if resp.status == want {
            return Ok(());
        }
        Err(PushError::Refused {
            registry: self.reference.registry.clone(),
            what: format!("{what} {}", self.reference.name),
            status: resp.status,
            body: resp.text().trim().chars().take(400).collect(),
        })
    }

    async fn push_blob(&self, dir: &Path, d: &Descriptor) -> Result<BlobPush, PushError> {
        let blob_url = format!(
            "{}/v2/{}/blobs/{}",
            self.base, self.reference.name, d.digest
        );
        let head = self.send(Request::new(Method::HEAD, blob_url)).await?;
        if head.status == StatusCode::OK {
            return Ok(BlobPush {
                digest: d.digest.clone(),
                size: d.size,
                uploaded: false,
            });
        }
        let bytes = {
            let (dir, d) = (dir.to_path_buf(), d.clone());
            tokio::task::spawn_blocking(move || layout::read_blob(&dir, &d))
                .await
                .expect("reading a blob does not panic")?
        };
        let start = format!("{}/v2/{}/blobs/uploads/", self.base, self.reference.name);
        let resp = self.send(Request::post(start)).await?;
        self.expect(&resp, StatusCode::ACCEPTED, "start blob upload to")?;
        let location = resp
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| PushError::NoLocation {
                registry: self.reference.registry.clone(),
                what: "start blob upload".into(),
            })?;
        let url = upload_url(&self.base, location, &d.digest);
        let resp = self
            .send(
                Request::new(Method::PUT, url)
                    .header("content-type", "application/octet-stream")
                    .body(bytes),
            )
            .await?;
        self.expect(
            &resp,
            StatusCode::CREATED,
            &format!("upload blob {} to", d.digest),
        )?;
        Ok(BlobPush {
            digest: d.digest.clone(),
            size: d.size,
            uploaded: true,
        })
    }
}

/// The URL that completes an upload: the registry's `Location` (absolute,
/// or a path on the registry) with `digest=` added to its query.
fn upload_url(base: &str, location: &str, digest: &str) -> String {
    let absolute = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("{base}{location}")
    };
    let sep = if absolute.contains('?') { '&' } else { '?' };
    // A digest is `sha256:<hex>`: only the colon needs escaping in a query.
    format!("{absolute}{sep}digest={}", digest.replace(':', "%3A"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_urls_keep_the_registrys_state() {
        assert_eq!(
            upload_url(
                "http://r:5000",
                "/v2/a/blobs/uploads/u?_state=x",
                "sha256:ab"
            ),
            "http://r:5000/v2/a/blobs/uploads/u?_state=x&digest=sha256%3Aab"
        );
        assert_eq!(
            upload_url(
                "http://r:5000",
                "http://r:5000/v2/a/blobs/uploads/u",
                "sha256:ab"
            ),
            "http://r:5000/v2/a/blobs/uploads/u?digest=sha256%3Aab"
        );
    }
}
