//! What a client sends: its apps, each with version, track, ids, and the
//! update check, ping and events it carries.

use crate::codes::{Cause, EventResult, EventType};
use crate::version::Version;
use crate::{OmahaError, malformed, wire};

/// A whole `<request>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The updater that sent it (`updaterversion`, e.g. `herd-0.1.0`).
    pub updater: Option<String>,
    pub os: Os,
    pub apps: Vec<App>,
}

/// `<os>`: informational.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Os {
    pub platform: Option<String>,
    pub version: Option<String>,
    pub sp: Option<String>,
}

/// One `<app>`: a machine asking about one app.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub app_id: String,
    /// The version it runs.
    pub version: Version,
    /// The channel it follows: herd's update group.
    pub track: String,
    /// Changes on every boot.
    pub boot_id: String,
    /// Stable across boots.
    pub machine_id: String,
    pub ping: bool,
    pub update_check: bool,
    pub events: Vec<Event>,
}

/// One `<event>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventType,
    pub result: EventResult,
    /// Why it failed (result 0): herd's [`Cause`] codes, or another
    /// updater's number.
    pub error_code: Option<i32>,
    /// The version the machine ran before this update.
    pub previous_version: Option<Version>,
    /// The version this event is about (the one being installed).
    pub next_version: Option<Version>,
}

impl Event {
    pub fn new(kind: EventType, result: EventResult) -> Event {
        Event {
            kind,
            result,
            error_code: None,
            previous_version: None,
            next_version: None,
        }
    }

    /// A failure event (`UpdateComplete`, result 0) for `cause`.
    pub fn failure(cause: Cause) -> Event {
        Event {
            error_code: Some(cause.code()),
            ..Event::new(EventType::UpdateComplete, EventResult::Error)
        }
    }

    /// herd's cause, when the error code is one of herd's.
    pub fn cause(&self) -> Option<Cause> {
        self.error_code.and_then(Cause::from_code)
    }
}

const DOC: &str = "request";

/// Identifiers are printable ASCII without spaces or quotes: they end up in
/// file names, logs and tables.
fn identifier(field: &str, value: &str) -> Result<String, OmahaError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"'<>&\\/".contains(&b));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(malformed(
            DOC,
            format!(
                "{field} {value:?} must be 1-128 printable characters without spaces, quotes or slashes"
            ),
        ))
    }
}

fn version(field: &str, text: &str) -> Result<Version, OmahaError> {
    text.parse()
        .map_err(|e| malformed(DOC, format!("{field}: {e}")))
}

fn number<T: std::str::FromStr>(field: &str, text: &str) -> Result<T, OmahaError> {
    text.trim()
        .parse()
        .map_err(|_| malformed(DOC, format!("{field} {text:?} is not a number")))
}

impl Request {
    /// Parses and checks a request body.
    pub fn parse(body: &[u8]) -> Result<Request, OmahaError> {
        let w: wire::Request = crate::decode(DOC, body)?;
        if w.protocol != "3.0" {
            return Err(malformed(
                DOC,
                format!("protocol {:?}: only 3.0 is spoken", w.protocol),
            ));
        }
        if w.apps.is_empty() {
            return Err(malformed(DOC, "no <app>"));
        }
        let os = w.os.unwrap_or_default();
        let apps = w
            .apps
            .into_iter()
            .enumerate()
            .map(|(i, a)| App::from_wire(i, a))
            .collect::<Result<_, _>>()?;
        Ok(Request {
            updater: w.updater_version.or(w.version),
            os: Os {
                platform: os.platform,
                version: os.version,
                sp: os.sp,
            },
            apps,
        })
    }

    /// The XML a client sends.
    pub fn to_xml(&self) -> String {
        crate::encode(&wire::Request {
            protocol: "3.0".into(),
            version: self.updater.clone(),
            updater_version: self.updater.clone(),
            is_machine: Some("1".into()),
            os: Some(wire::Os {
                platform: self.os.platform.clone(),
                version: self.os.version.clone(),
                sp: self.os.sp.clone(),
            }),
            apps: self.apps.iter().map(App::to_wire).collect(),
        })
    }
}

impl App {
    fn from_wire(i: usize, a: wire::App) -> Result<App, OmahaError> {
        let at = |f: &str| format!("app[{i}] {f}");
        let required = |f: &str, v: Option<String>| {
            v.ok_or_else(|| malformed(DOC, format!("{} is missing", at(f))))
        };
        let events = a
            .events
            .into_iter()
            .enumerate()
            .map(|(j, e)| {
                let at = |f: &str| format!("app[{i}] event[{j}] {f}");
                let kind = EventType::from_code(number(&at("eventtype"), &e.eventtype)?);
                let code: u32 = number(&at("eventresult"), &e.eventresult)?;
                let result = EventResult::from_code(code).ok_or_else(|| {
                    malformed(
                        DOC,
                        format!("{} {code} is not 0, 1 or 2", at("eventresult")),
                    )
                })?;
                Ok(Event {
                    kind,
                    result,
                    error_code: e
                        .errorcode
                        .map(|c| number(&at("errorcode"), &c))
                        .transpose()?,
                    previous_version: e
                        .previousversion
                        .filter(|v| !v.is_empty() && v != "0.0.0.0")
                        .map(|v| version(&at("previousversion"), &v))
                        .transpose()?,
                    next_version: e
                        .nextversion
                        .filter(|v| !v.is_empty())
                        .map(|v| version(&at("nextversion"), &v))
                        .transpose()?,
                })
            })
            .collect::<Result<_, OmahaError>>()?;
        Ok(App {
            app_id: identifier(&at("appid"), &a.appid)?,
            version: version(&at("version"), &a.version)?,
            track: identifier(&at("track"), &required("track", a.track)?)?,
            boot_id: identifier(&at("bootid"), &required("bootid", a.bootid)?)?,
            machine_id: identifier(&at("machineid"), &required("machineid", a.machineid)?)?,
            ping: a.ping.is_some(),
            update_check: a.updatecheck.is_some(),
            events,
        })
    }

    fn to_wire(&self) -> wire::App {
        wire::App {
            appid: self.app_id.clone(),
            version: self.version.to_string(),
            track: Some(self.track.clone()),
            bootid: Some(self.boot_id.clone()),
            machineid: Some(self.machine_id.clone()),
            ping: self.ping.then(|| wire::Ping {
                active: Some("1".into()),
            }),
            updatecheck: self.update_check.then(wire::Empty::default),
            events: self
                .events
                .iter()
                .map(|e| wire::Event {
                    eventtype: e.kind.code().to_string(),
                    eventresult: e.result.code().to_string(),
                    errorcode: e.error_code.map(|c| c.to_string()),
                    previousversion: e.previous_version.as_ref().map(Version::to_string),
                    nextversion: e.next_version.as_ref().map(Version::to_string),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// update_engine's request, as flatcar/ue-rs records it in its test data
    /// (with herd's app id and a version herd can compare).
    const UPDATE_ENGINE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<request protocol="3.0" version="update_engine-0.4.10" updaterversion="update_engine-0.4.10" installsource="scheduler" ismachine="1">
  <os version="Chateau" platform="CoreOS" sp="2512.2.0_x86_64"></os>
  <app appid="e96281a6-d1af-4bde-9a0a-97b76e56dc57" version="1.2.3" track="alpha" bootid="{965fb4c5-ad3e-4eb7-a4c2-ca0c0e31ec84}" oem="ami" oemversion="0.1.1-r1" alephversion="1688.5.3" machineid="abce671d61774703ac7be60715220bfe" lang="en-US" board="amd64-usr" hardware_class="" delta_okay="false" >
    <ping active="1"></ping>
    <updatecheck></updatecheck>
    <event eventtype="3" eventresult="1"></event>
  </app>
</request>
"#;

    #[test]
    fn update_engines_request_parses() {
        let r = Request::parse(UPDATE_ENGINE.as_bytes()).unwrap();
        assert_eq!(r.updater.as_deref(), Some("update_engine-0.4.10"));
        assert_eq!(r.os.platform.as_deref(), Some("CoreOS"));
        let app = &r.apps[0];
        assert_eq!(app.track, "alpha");
        assert_eq!(app.version, "1.2.3".parse().unwrap());
        assert_eq!(app.machine_id, "abce671d61774703ac7be60715220bfe");
        assert!(app.ping && app.update_check);
        assert_eq!(
            app.events,
            vec![Event::new(EventType::UpdateComplete, EventResult::Success)]
        );
    }

    #[test]
    fn a_request_survives_its_own_encoding() {
        let r = Request {
            updater: Some("herd-0.1.0".into()),
            os: Os {
                platform: Some("herd".into()),
                ..Default::default()
            },
            apps: vec![App {
                app_id: crate::APP_ID.into(),
                version: "0.1.0".parse().unwrap(),
                track: "stable".into(),
                boot_id: "b".into(),
                machine_id: "525400770001".into(),
                ping: true,
                update_check: false,
                events: vec![Event {
                    previous_version: Some("0.1.0".parse().unwrap()),
                    next_version: Some("0.2.0".parse().unwrap()),
                    ..Event::failure(Cause::HealthGate)
                }],
            }],
        };
        let back = Request::parse(r.to_xml().as_bytes()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.apps[0].events[0].cause(), Some(Cause::HealthGate));
    }

    #[test]
    fn malformed_requests_name_what_is_wrong() {
        let cases = [
            (
                "<request protocol='3.0'><app appid='a' track='t' bootid='b' machineid='m'/></request>",
                "attribute `version`",
            ),
            (
                "<request protocol='2.0'><app appid='a' version='1'/></request>",
                "protocol \"2.0\"",
            ),
            ("<request protocol='3.0'></request>", "no <app>"),
            (
                "<request protocol='3.0'><app appid='a' version='x' track='t' bootid='b' machineid='m'/></request>",
                "app[0] version",
            ),
            (
                "<request protocol='3.0'><app appid='a' version='1' bootid='b' machineid='m'/></request>",
                "app[0] track is missing",
            ),
            (
                "<request protocol='3.0'><app appid='a' version='1' track='../x' bootid='b' machineid='m'/></request>",
                "app[0] track",
            ),
            (
                "<request protocol='3.0'><app appid='a' version='1' track='t' bootid='b' machineid='m'><event eventtype='x' eventresult='1'/></app></request>",
                "event[0] eventtype",
            ),
            (
                "<request protocol='3.0'><app appid='a' version='1' track='t' bootid='b' machineid='m'><event eventtype='3' eventresult='7'/></app></request>",
                "eventresult 7",
            ),
            ("<response protocol='3.0'/>", "root element is <response>"),
            ("<request protocol='3.0'><app", "not well-formed"),
            ("not xml", "not well-formed"),
        ];
        for (xml, needle) in cases {
            let e = Request::parse(xml.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(needle), "{xml}: {e}");
        }
        let huge = format!(
            "<request protocol='3.0'>{}</request>",
            " ".repeat(crate::MAX_DOCUMENT)
        );
        assert!(matches!(
            Request::parse(huge.as_bytes()),
            Err(OmahaError::TooLarge { .. })
        ));
    }
}
