//! What a server answers: per app a status, the update check's result
//! (nothing to do, or where the payload is and what it must hash to), and
//! an acknowledgement per event.

use base64::Engine;

use crate::version::Version;
use crate::{OmahaError, malformed, wire};

/// A whole `<response>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Who answered (`server`), for logs.
    pub server: String,
    pub apps: Vec<AppResponse>,
}

/// One `<app>` of a response.
#[derive(Debug, Clone, PartialEq)]
pub struct AppResponse {
    pub app_id: String,
    pub status: AppStatus,
    /// Whether a ping was answered.
    pub ping: bool,
    /// `None` when the request had no update check.
    pub update_check: Option<UpdateCheck>,
    /// How many events the server accepted.
    pub events: usize,
}

/// The app's `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppStatus {
    Ok,
    /// `error-unknownApplication`: the server serves no such app id.
    UnknownApplication,
    /// Any other error status, verbatim.
    Error(String),
}

impl AppStatus {
    fn as_str(&self) -> &str {
        match self {
            AppStatus::Ok => "ok",
            AppStatus::UnknownApplication => "error-unknownApplication",
            AppStatus::Error(s) => s,
        }
    }
}

/// The result of an update check.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateCheck {
    NoUpdate,
    Update(Update),
}

/// An offered update: where to fetch it, and what it must be.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// Base URLs (`codebase`); a package is fetched from base + name.
    pub urls: Vec<String>,
    pub version: Version,
    pub packages: Vec<Package>,
    /// The `postinstall` action's SHA-256 of the first package, if sent.
    pub postinstall_sha256: Option<[u8; 32]>,
}

/// One file of an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// A plain file name (no `/`), appended to a codebase URL.
    pub name: String,
    pub size: u64,
    pub sha256: [u8; 32],
    pub required: bool,
}

impl Update {
    /// The package named `name`.
    pub fn package(&self, name: &str) -> Option<&Package> {
        self.packages.iter().find(|p| p.name == name)
    }

    /// The URL of `package` under the first codebase.
    pub fn url_of(&self, package: &Package) -> String {
        format!("{}{}", self.urls[0], package.name)
    }
}

const DOC: &str = "response";

fn hex32(field: &str, text: &str) -> Result<[u8; 32], OmahaError> {
    let bytes = (text.len() == 64)
        .then(|| {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
                .collect::<Option<Vec<u8>>>()
        })
        .flatten();
    bytes
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| malformed(DOC, format!("{field} {text:?} is not 64 hex digits")))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Response {
    /// Parses and checks a response body. An offered update must carry a
    /// codebase URL, a version and at least one package, each with a plain
    /// name, a size and a SHA-256: a client can trust nothing else.
    pub fn parse(body: &[u8]) -> Result<Response, OmahaError> {
        let w: wire::Response = crate::decode(DOC, body)?;
        if w.protocol != "3.0" {
            return Err(malformed(
                DOC,
                format!("protocol {:?}: only 3.0 is spoken", w.protocol),
            ));
        }
        let apps = w
            .apps
            .into_iter()
            .enumerate()
            .map(|(i, a)| AppResponse::from_wire(i, a))
            .collect::<Result<_, _>>()?;
        Ok(Response {
            server: w.server.unwrap_or_default(),
            apps,
        })
    }

    /// The XML a server sends.
    pub fn to_xml(&self) -> String {
        crate::encode(&wire::Response {
            protocol: "3.0".into(),
            server: Some(self.server.clone()),
            daystart: Some(wire::DayStart {
                elapsed_seconds: "0".into(),
            }),
            apps: self.apps.iter().map(AppResponse::to_wire).collect(),
        })
    }

    /// The answer for `app_id`.
    pub fn app(&self, app_id: &str) -> Option<&AppResponse> {
        self.apps.iter().find(|a| a.app_id == app_id)
    }
}

impl AppResponse {
    fn from_wire(i: usize, a: wire::AppResponse) -> Result<AppResponse, OmahaError> {
        let at = |f: &str| format!("app[{i}] {f}");
        let status = match a.status.as_str() {
            "ok" => AppStatus::Ok,
            "error-unknownApplication" => AppStatus::UnknownApplication,
            other => AppStatus::Error(other.to_owned()),
        };
        let update_check = a
            .updatecheck
            .map(|u| match u.status.as_str() {
                "noupdate" => Ok(UpdateCheck::NoUpdate),
                "ok" => Update::from_wire(&at("updatecheck"), u).map(UpdateCheck::Update),
                other => Err(malformed(
                    DOC,
                    format!(
                        "{} status {other:?} is not ok or noupdate",
                        at("updatecheck")
                    ),
                )),
            })
            .transpose()?;
        Ok(AppResponse {
            app_id: a.appid,
            status,
            ping: a.ping.is_some(),
            update_check,
            events: a.events.len(),
        })
    }

    fn to_wire(&self) -> wire::AppResponse {
        let ok = || wire::Status {
            status: "ok".into(),
        };
        wire::AppResponse {
            appid: self.app_id.clone(),
            status: self.status.as_str().to_owned(),
            ping: self.ping.then(ok),
            updatecheck: self.update_check.as_ref().map(|u| match u {
                UpdateCheck::NoUpdate => wire::UpdateCheck {
                    status: "noupdate".into(),
                    urls: None,
                    manifest: None,
                },
                UpdateCheck::Update(up) => up.to_wire(),
            }),
            events: (0..self.events).map(|_| ok()).collect(),
        }
    }
}

impl Update {
    fn from_wire(at: &str, u: wire::UpdateCheck) -> Result<Update, OmahaError> {
        let urls: Vec<String> = u
            .urls
            .map(|u| u.urls.into_iter().map(|u| u.codebase).collect())
            .unwrap_or_default();
        if urls.is_empty() {
            return Err(malformed(
                DOC,
                format!("{at} offers an update without <urls>"),
            ));
        }
        for url in &urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) || !url.ends_with('/') {
                return Err(malformed(
                    DOC,
                    format!("{at} codebase {url:?} is not an http(s) URL ending in /"),
                ));
            }
        }
        let m = u
            .manifest
            .ok_or_else(|| malformed(DOC, format!("{at} offers an update without <manifest>")))?;
        let version: Version = m
            .version
            .parse()
            .map_err(|e| malformed(DOC, format!("{at} manifest version: {e}")))?;
        let packages = m
            .packages
            .map(|p| p.packages)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(j, p)| {
                let at = format!("{at} package[{j}]");
                let plain = !p.name.is_empty()
                    && p.name.len() <= 128
                    && p.name != "."
                    && p.name != ".."
                    && p.name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                if !plain {
                    return Err(malformed(
                        DOC,
                        format!("{at} name {:?} is not a plain file name", p.name),
                    ));
                }
                let size = p.size.trim().parse().map_err(|_| {
                    malformed(DOC, format!("{at} size {:?} is not a number", p.size))
                })?;
                let sha = p.hash_sha256.ok_or_else(|| {
                    malformed(DOC, format!("{at} ({}) has no hash_sha256", p.name))
                })?;
                Ok(Package {
                    sha256: hex32(&format!("{at} hash_sha256"), &sha)?,
                    name: p.name,
                    size,
                    required: p.required.as_deref() != Some("false"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if packages.is_empty() {
            return Err(malformed(
                DOC,
                format!("{at} offers an update without packages"),
            ));
        }
        let postinstall_sha256 = m
            .actions
            .map(|a| a.actions)
            .unwrap_or_default()
            .into_iter()
            .find(|a| a.event == "postinstall")
            .and_then(|a| a.sha256)
            .map(|s| {
                base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| {
                        malformed(
                            DOC,
                            format!("{at} postinstall sha256 {s:?} is not base64 of 32 bytes"),
                        )
                    })
            })
            .transpose()?;
        Ok(Update {
            urls,
            version,
            packages,
            postinstall_sha256,
        })
    }

    fn to_wire(&self) -> wire::UpdateCheck {
        wire::UpdateCheck {
            status: "ok".into(),
            urls: Some(wire::Urls {
                urls: self
                    .urls
                    .iter()
                    .map(|u| wire::Url {
                        codebase: u.clone(),
                    })
                    .collect(),
            }),
            manifest: Some(wire::Manifest {
                version: self.version.to_string(),
                packages: Some(wire::Packages {
                    packages: self
                        .packages
                        .iter()
                        .map(|p| wire::Package {
                            name: p.name.clone(),
                            size: p.size.to_string(),
                            hash_sha256: Some(hex(&p.sha256)),
                            required: Some(p.required.to_string()),
                        })
                        .collect(),
                }),
                actions: self.postinstall_sha256.map(|s| wire::Actions {
                    actions: vec![wire::Action {
                        event: "postinstall".into(),
                        sha256: Some(base64::engine::general_purpose::STANDARD.encode(s)),
                    }],
                }),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nebraska's answer, as flatcar/ue-rs records it in its test data.
    const NEBRASKA: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<response protocol="3.0" server="nebraska">
  <daystart elapsed_seconds="0"></daystart>
  <app appid="e96281a6-d1af-4bde-9a0a-97b76e56dc57" status="ok">
    <ping status="ok"></ping>
    <updatecheck status="ok">
      <urls>
        <url codebase="https://update.release.flatcar-linux.net/amd64-usr/3732.0.0/"></url>
      </urls>
      <manifest version="3732.0.0">
        <packages>
          <package name="oem-azure.gz" hash="wepxwEV9L2SS1l/ycEZSqWM3dDc=" hash_sha256="3aed3129de50b959a97e4913ba485bd60e72d2bb6aa377d5ed404103f0680043" size="40897503" required="false"></package>
        </packages>
        <actions>
          <action event="postinstall" sha256="stLG3U/o4Ar8TMHFwT/RWB0iNkaWOO6QtLrq6+AHBbA=" DisablePayloadBackoff="true"></action>
        </actions>
      </manifest>
    </updatecheck>
    <event status="ok"></event>
  </app>
</response>
"#;

    #[test]
    fn nebraskas_response_parses() {
        let r = Response::parse(NEBRASKA.as_bytes()).unwrap();
        assert_eq!(r.server, "nebraska");
        let app = &r.apps[0];
        assert_eq!(app.status, AppStatus::Ok);
        assert!(app.ping);
        assert_eq!(app.events, 1);
        let Some(UpdateCheck::Update(u)) = &app.update_check else {
            panic!("{app:?}");
        };
        assert_eq!(u.version, "3732.0.0".parse().unwrap());
        let p = &u.packages[0];
        assert_eq!(
            (p.name.as_str(), p.size, p.required),
            ("oem-azure.gz", 40897503, false)
        );
        assert_eq!(
            hex(&p.sha256),
            "3aed3129de50b959a97e4913ba485bd60e72d2bb6aa377d5ed404103f0680043"
        );
        assert!(u.postinstall_sha256.is_some());
        assert_eq!(
            u.url_of(p),
            "https://update.release.flatcar-linux.net/amd64-usr/3732.0.0/oem-azure.gz"
        );
    }

    #[test]
    fn a_response_survives_its_own_encoding() {
        let r = Response {
            server: "herd".into(),
            apps: vec![AppResponse {
                app_id: crate::APP_ID.into(),
                status: AppStatus::Ok,
                ping: true,
                update_check: Some(UpdateCheck::Update(Update {
                    urls: vec!["http://10.77.0.1:8080/v1/update/releases/0.2.0/".into()],
                    version: "0.2.0".parse().unwrap(),
                    packages: vec![
                        Package {
                            name: "update.payload".into(),
                            size: 43_788_310,
                            sha256: [7; 32],
                            required: true,
                        },
                        Package {
                            name: "update.payload.sig".into(),
                            size: 64,
                            sha256: [9; 32],
                            required: true,
                        },
                    ],
                    postinstall_sha256: Some([7; 32]),
                })),
                events: 2,
            }],
        };
        assert_eq!(Response::parse(r.to_xml().as_bytes()).unwrap(), r);
        let none = Response {
            server: "herd".into(),
            apps: vec![AppResponse {
                update_check: Some(UpdateCheck::NoUpdate),
                events: 0,
                ..r.apps[0].clone()
            }],
        };
        assert_eq!(Response::parse(none.to_xml().as_bytes()).unwrap(), none);
    }

    #[test]
    fn untrustworthy_offers_are_refused() {
        let offer = |inner: &str| {
            format!(
                "<response protocol='3.0'><app appid='a' status='ok'><updatecheck status='ok'>{inner}</updatecheck></app></response>"
            )
        };
        let urls = "<urls><url codebase='http://s/r/'/></urls>";
        let pkg = |name: &str, size: &str, sha: &str| {
            format!(
                "<manifest version='1.0'><packages><package name='{name}' size='{size}' hash_sha256='{sha}'/></packages></manifest>"
            )
        };
        let good_sha = "ab".repeat(32);
        let cases = [
            (offer(&pkg("p", "1", &good_sha)), "without <urls>"),
            (offer(&format!("<urls><url codebase='file:///etc/'/></urls>{}", pkg("p", "1", &good_sha))), "codebase"),
            (offer(&format!("{urls}{}", pkg("../etc/passwd", "1", &good_sha))), "not a plain file name"),
            (offer(&format!("{urls}{}", pkg("p", "-1", &good_sha))), "size \"-1\""),
            (offer(&format!("{urls}{}", pkg("p", "1", "abc"))), "not 64 hex digits"),
            (offer(&format!("{urls}<manifest version='x'/>")), "manifest version"),
            (offer(&format!("{urls}<manifest version='1'/>")), "without packages"),
            (offer(urls), "without <manifest>"),
            ("<response protocol='3.0'><app appid='a' status='ok'><updatecheck status='maybe'/></app></response>".to_owned(), "status \"maybe\""),
        ];
        for (xml, needle) in cases {
            let e = Response::parse(xml.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(needle), "{xml}: {e}");
        }
    }
}
