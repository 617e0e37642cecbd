//! The XML shapes, field for field (attributes are `@name`): only serde
//! glue. Every value is checked when it is turned into the typed
//! [`crate::request`] and [`crate::response`] values.

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename = "request")]
pub struct Request {
    #[serde(rename = "@protocol")]
    pub protocol: String,
    #[serde(rename = "@version", default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(
        rename = "@updaterversion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub updater_version: Option<String>,
    #[serde(
        rename = "@ismachine",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub is_machine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<Os>,
    #[serde(rename = "app", default)]
    pub apps: Vec<App>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Os {
    #[serde(rename = "@platform", default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(rename = "@version", default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(rename = "@sp", default, skip_serializing_if = "Option::is_none")]
    pub sp: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct App {
    #[serde(rename = "@appid")]
    pub appid: String,
    #[serde(rename = "@version")]
    pub version: String,
    #[serde(rename = "@track", default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    #[serde(rename = "@bootid", default, skip_serializing_if = "Option::is_none")]
    pub bootid: Option<String>,
    #[serde(
        rename = "@machineid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub machineid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<Ping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updatecheck: Option<Empty>,
    #[serde(rename = "event", default)]
    pub events: Vec<Event>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Ping {
    #[serde(rename = "@active", default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "@eventtype")]
    pub eventtype: String,
    #[serde(rename = "@eventresult")]
    pub eventresult: String,
    #[serde(
        rename = "@errorcode",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub errorcode: Option<String>,
    #[serde(
        rename = "@previousversion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub previousversion: Option<String>,
    #[serde(
        rename = "@nextversion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub nextversion: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename = "response")]
pub struct Response {
    #[serde(rename = "@protocol")]
    pub protocol: String,
    #[serde(rename = "@server", default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daystart: Option<DayStart>,
    #[serde(rename = "app", default)]
    pub apps: Vec<AppResponse>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DayStart {
    #[serde(rename = "@elapsed_seconds")]
    pub elapsed_seconds: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AppResponse {
    #[serde(rename = "@appid")]
    pub appid: String,
    #[serde(rename = "@status")]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updatecheck: Option<UpdateCheck>,
    #[serde(rename = "event", default)]
    pub events: Vec<Status>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    #[serde(rename = "@status")]
    pub status: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UpdateCheck {
    #[serde(rename = "@status")]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Urls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Urls {
    #[serde(rename = "url", default)]
    pub urls: Vec<Url>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Url {
    #[serde(rename = "@codebase")]
    pub codebase: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "@version")]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<Packages>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Actions>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Packages {
    #[serde(rename = "package", default)]
    pub packages: Vec<Package>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Package {
    #[serde(rename = "@name")]
    pub name: String,
    #[serde(rename = "@size")]
    pub size: String,
    #[serde(
        rename = "@hash_sha256",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub hash_sha256: Option<String>,
    #[serde(rename = "@required", default, skip_serializing_if = "Option::is_none")]
    pub required: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Actions {
    #[serde(rename = "action", default)]
    pub actions: Vec<Action>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Action {
    #[serde(rename = "@event")]
    pub event: String,
    #[serde(rename = "@sha256", default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}
