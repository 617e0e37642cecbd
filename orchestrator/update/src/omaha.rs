//! Talking Omaha to the update server: one request carries the running
//! version, the ids, a ping, the events not yet delivered and, when asked,
//! an update check; the answer is parsed strictly (herd_omaha) and an
//! offer is checked before anything is fetched.

use herd_omaha::{
    App, AppStatus, Cause, Event, OmahaError, Os, Request, Response, Update, UpdateCheck, Version,
};

use crate::local::{FileSpec, Offer, Pending};

/// The names of the two files of an update.
pub const PAYLOAD: &str = "update.payload";
pub const SIGNATURE: &str = "update.payload.sig";

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(transparent)]
    Http(#[from] herd_http::Error),
    #[error(transparent)]
    Malformed(#[from] OmahaError),
    #[error("the server's answer has no app {0}")]
    NoApp(String),
    #[error("the server does not serve app {0} (status {1})")]
    Refused(String, String),
}

impl ExchangeError {
    /// Whether the server, not the network, is at fault.
    pub fn cause(&self) -> Option<Cause> {
        match self {
            ExchangeError::Http(_) => None,
            _ => Some(Cause::MalformedResponse),
        }
    }
}

/// Why an offer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("{offered} is older than the running {running}, and downgrades are not allowed here")]
    Downgrade { offered: String, running: String },
    #[error("the offer has no package {0}")]
    MissingPackage(&'static str),
    #[error("the offered package {name} is {size} bytes, more than the {max} a payload may be")]
    TooLarge { name: String, size: u64, max: u64 },
    #[error("the postinstall action's sha256 is not the payload's")]
    PostinstallMismatch,
}

impl OfferError {
    pub fn cause(&self) -> Cause {
        match self {
            OfferError::Downgrade { .. } => Cause::Downgrade,
            _ => Cause::MalformedResponse,
        }
    }
}

/// The largest payload accepted (a USR image, kernel and initramfs).
pub const MAX_PAYLOAD: u64 = 4 << 30;

/// The Omaha client of one machine.
#[derive(Debug, Clone)]
pub struct OmahaClient {
    pub http: herd_http::Client,
    /// `…/v1/update/`.
    pub url: String,
    pub group: String,
    pub machine_id: String,
}

impl OmahaClient {
    /// A client of the server at `server` (its base URL).
    pub fn new(
        http: herd_http::Client,
        server: &str,
        group: &str,
        machine_id: &str,
    ) -> OmahaClient {
        OmahaClient {
            http,
            url: format!("{}/v1/update/", server.trim_end_matches('/')),
            group: group.to_owned(),
            machine_id: machine_id.to_owned(),
        }
    }

    /// One request: `events`, a ping, and an update check if `check`.
    /// Returns the update check's result (`None` without a check).
    pub async fn exchange(
        &self,
        version: &Version,
        boot_id: &str,
        check: bool,
        events: &[Pending],
    ) -> Result<Option<UpdateCheck>, ExchangeError> {
        let request = Request {
            updater: Some(format!("herd-{}", env!("CARGO_PKG_VERSION"))),
            os: Os {
                platform: Some("herd".into()),
                version: Some(version.to_string()),
                sp: None,
            },
            apps: vec![App {
                app_id: herd_omaha::APP_ID.into(),
                version: version.clone(),
                track: self.group.clone(),
                boot_id: boot_id.to_owned(),
                machine_id: self.machine_id.clone(),
                ping: true,
                update_check: check,
                events: events.iter().map(event).collect(),
            }],
        };
        let resp = self
            .http
            .call(
                herd_http::Request::post(&self.url)
                    .header("content-type", "text/xml")
                    .body(request.to_xml()),
            )
            .await?;
        let answer = Response::parse(&resp.body)?;
        let app = answer
            .app(herd_omaha::APP_ID)
            .ok_or_else(|| ExchangeError::NoApp(herd_omaha::APP_ID.into()))?;
        if app.status != AppStatus::Ok {
            return Err(ExchangeError::Refused(
                herd_omaha::APP_ID.into(),
                format!("{:?}", app.status),
            ));
        }
        Ok(app.update_check.clone())
    }
}

fn event(p: &Pending) -> Event {
    Event {
        kind: p.kind,
        result: p.result,
        error_code: p.error_code,
        previous_version: p.previous.as_deref().and_then(|v| v.parse().ok()),
        next_version: p.next.as_deref().and_then(|v| v.parse().ok()),
    }
}

/// Checks an offer against what runs here: no downgrade unless allowed,
/// both packages present, sizes sane, the postinstall hash consistent.
pub fn accept(
    update: &Update,
    running: &Version,
    allow_downgrade: bool,
) -> Result<Offer, OfferError> {
    if update.version < *running && !allow_downgrade {
        return Err(OfferError::Downgrade {
            offered: update.version.to_string(),
            running: running.to_string(),
        });
    }
    let spec = |name: &'static str| -> Result<FileSpec, OfferError> {
        let p = update
            .package(name)
            .ok_or(OfferError::MissingPackage(name))?;
        if p.size > MAX_PAYLOAD {
            return Err(OfferError::TooLarge {
                name: p.name.clone(),
                size: p.size,
                max: MAX_PAYLOAD,
            });
        }
        Ok(FileSpec {
            name: p.name.clone(),
            size: p.size,
            sha256: hex::encode(p.sha256),
        })
    };
    let payload = spec(PAYLOAD)?;
    let signature = spec(SIGNATURE)?;
    if let Some(sha) = update.postinstall_sha256
        && hex::encode(sha) != payload.sha256
    {
        return Err(OfferError::PostinstallMismatch);
    }
    Ok(Offer {
        version: update.version.to_string(),
        urls: update.urls.clone(),
        payload,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_omaha::Package;

    fn update(version: &str) -> Update {
        Update {
            urls: vec!["http://s/v1/update/releases/x/".into()],
            version: version.parse().unwrap(),
            packages: vec![
                Package {
                    name: PAYLOAD.into(),
                    size: 100,
                    sha256: [1; 32],
                    required: true,
                },
                Package {
                    name: SIGNATURE.into(),
                    size: 64,
                    sha256: [2; 32],
                    required: true,
                },
            ],
            postinstall_sha256: Some([1; 32]),
        }
    }

    #[test]
    fn offers_are_checked_before_anything_is_fetched() {
        let running: Version = "0.2.0".parse().unwrap();
        let o = accept(&update("0.3.0"), &running, false).unwrap();
        assert_eq!(o.payload.sha256, "01".repeat(32));
        let e = accept(&update("0.1.0"), &running, false).unwrap_err();
        assert_eq!(e.cause(), Cause::Downgrade);
        assert!(
            e.to_string().contains("older than the running 0.2.0"),
            "{e}"
        );
        assert!(accept(&update("0.1.0"), &running, true).is_ok());
        let mut u = update("0.3.0");
        u.packages.pop();
        assert_eq!(
            accept(&u, &running, false).unwrap_err(),
            OfferError::MissingPackage(SIGNATURE)
        );
        let mut u = update("0.3.0");
        u.postinstall_sha256 = Some([9; 32]);
        assert_eq!(
            accept(&u, &running, false).unwrap_err(),
            OfferError::PostinstallMismatch
        );
        let mut u = update("0.3.0");
        u.packages[0].size = MAX_PAYLOAD + 1;
        assert!(matches!(
            accept(&u, &running, false),
            Err(OfferError::TooLarge { .. })
        ));
    }
}
