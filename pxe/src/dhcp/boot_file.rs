//! The PXE boot decision: which file (or URL) a client gets, from its architecture and whether it already runs iPXE.
//!
//! Firmware PXE ROMs get a TFTP boot file for their architecture (option 93:
//! BIOS → `undionly.kpxe`, x86-64 UEFI → `ipxe.efi`/`snponly.efi`); UEFI HTTP
//! boot clients get an HTTP URL of the EFI binary; a client that is already
//! iPXE (user class "iPXE" or option 175) gets the HTTP URL of its script, so
//! iPXE never chain-loads itself in a loop.

use std::net::Ipv4Addr;

use super::config::MacAddr;

/// Where boot programs and scripts are served. Swapped on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// `siaddr` and option 66: the TFTP server firmware fetches the boot file from.
    pub next_server: Ipv4Addr,
    /// Boot file for BIOS PXE ROMs (architecture 0).
    pub bios_file: String,
    /// Boot file for x86-64 UEFI PXE (architectures 7 and 9): `ipxe.efi` or `snponly.efi`.
    pub efi_file: String,
    /// Boot file for arm64 UEFI PXE (architecture 11), if served.
    pub arm64_file: Option<String>,
    /// Full URL of the x86-64 EFI binary for UEFI HTTP boot clients (architecture 16).
    pub http_efi_url: Option<String>,
    /// URL of the iPXE script for clients already running iPXE. `${mac}` is
    /// replaced with the client's MAC (`52:54:00:…`) before sending.
    pub ipxe_script_url: String,
}

impl BootConfig {
    /// Debian's iPXE file names, TFTP from `next_server`, the given script URL.
    pub fn new(next_server: Ipv4Addr, ipxe_script_url: &str) -> BootConfig {
        BootConfig {
            next_server,
            bios_file: "undionly.kpxe".to_owned(),
            efi_file: "ipxe.efi".to_owned(),
            arm64_file: None,
            http_efi_url: None,
            ipxe_script_url: ipxe_script_url.to_owned(),
        }
    }
}

/// Client system architecture (option 93, RFC 4578 and IANA's registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientArch {
    Bios,
    EfiIa32,
    EfiX64,
    /// Type 9, "EFI BC": in practice x86-64 UEFI firmware.
    EfiBc,
    EfiArm64,
    EfiX64Http,
    EfiArm64Http,
    Other(u16),
}

impl ClientArch {
    pub fn code(self) -> u16 {
        match self {
            ClientArch::Bios => 0,
            ClientArch::EfiIa32 => 6,
            ClientArch::EfiX64 => 7,
            ClientArch::EfiBc => 9,
            ClientArch::EfiArm64 => 11,
            ClientArch::EfiX64Http => 16,
            ClientArch::EfiArm64Http => 19,
            ClientArch::Other(n) => n,
        }
    }

    fn is_http(self) -> bool {
        matches!(self, ClientArch::EfiX64Http | ClientArch::EfiArm64Http)
    }
}

impl From<u16> for ClientArch {
    fn from(code: u16) -> Self {
        match code {
            0 => ClientArch::Bios,
            6 => ClientArch::EfiIa32,
            7 => ClientArch::EfiX64,
            9 => ClientArch::EfiBc,
            11 => ClientArch::EfiArm64,
            16 => ClientArch::EfiX64Http,
            19 => ClientArch::EfiArm64Http,
            n => ClientArch::Other(n),
        }
    }
}

/// What a request tells us about the client's boot firmware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub mac: MacAddr,
    /// First entry of option 93, or the `Arch:NNNNN` field of a PXEClient vendor class.
    pub arch: Option<ClientArch>,
    /// Option 60, lossily decoded.
    pub vendor_class: Option<String>,
    /// User class "iPXE" (option 77) or iPXE's encapsulated options (175).
    pub is_ipxe: bool,
    /// Option 97 as sent (type byte + 16-byte UUID), echoed back to PXE clients.
    pub uuid: Option<Vec<u8>>,
}

impl ClientInfo {
    /// Whether this is network boot firmware at all (plain OS DHCP clients get no boot file).
    pub fn is_netboot(&self) -> bool {
        self.is_ipxe
            || self.arch.is_some()
            || self.vendor_is("PXEClient")
            || self.vendor_is("HTTPClient")
    }

    fn vendor_is(&self, prefix: &str) -> bool {
        self.vendor_class
            .as_deref()
            .is_some_and(|v| v.starts_with(prefix))
    }

    /// The architecture from option 93, else from a `PXEClient:Arch:00007:…` vendor class.
    pub fn effective_arch(&self) -> Option<ClientArch> {
        self.arch.or_else(|| {
            let v = self.vendor_class.as_deref()?;
            let rest = v.split(':').skip_while(|f| *f != "Arch").nth(1)?;
            rest.parse::<u16>().ok().map(ClientArch::from)
        })
    }

    /// The 16 UUID bytes of option 97 (type 0), for the inventory.
    pub fn uuid_bytes(&self) -> Option<[u8; 16]> {
        let raw = self.uuid.as_deref()?;
        match raw {
            [0, rest @ ..] if rest.len() == 16 => rest.try_into().ok(),
            _ => None,
        }
    }
}

/// How the chosen boot file is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootStage {
    /// Firmware fetches an iPXE binary over TFTP.
    Tftp,
    /// UEFI HTTP boot fetches the EFI binary over HTTP.
    HttpEfi,
    /// iPXE fetches its script over HTTP.
    IpxeScript,
}

/// The boot part of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootDecision {
    /// `file` field and option 67.
    pub filename: String,
    /// `siaddr` and option 66 (TFTP only).
    pub next_server: Option<Ipv4Addr>,
    /// Option 60 in the reply: "PXEClient" or "HTTPClient" (firmware ignores offers without it).
    pub vendor_class: Option<&'static str>,
    /// Send option 43 with PXE discovery control = 8 (boot the file named here,
    /// no boot-server discovery or menu): what PXE ROMs need to skip their prompt.
    pub pxe_vendor_options: bool,
    /// Option 97 to echo.
    pub uuid: Option<Vec<u8>>,
    pub stage: BootStage,
}

/// Chooses the boot file for `client`, or `None` for a client that is not
/// network-booting or whose architecture we serve nothing for.
pub fn decide(config: &BootConfig, client: &ClientInfo) -> Option<BootDecision> {
    if !client.is_netboot() {
        return None;
    }
    let pxe_vendor = client.vendor_is("PXEClient").then_some("PXEClient");
    if client.is_ipxe {
        if config.ipxe_script_url.is_empty() {
            return None;
        }
        return Some(BootDecision {
            filename: config
                .ipxe_script_url
                .replace("${mac}", &client.mac.to_string()),
            next_server: None,
            vendor_class: pxe_vendor,
            pxe_vendor_options: false,
            uuid: client.uuid.clone(),
            stage: BootStage::IpxeScript,
        });
    }
    let arch = client.effective_arch();
    if client.vendor_is("HTTPClient") || arch.is_some_and(ClientArch::is_http) {
        return Some(BootDecision {
            filename: config.http_efi_url.clone()?,
            next_server: None,
            vendor_class: Some("HTTPClient"),
            pxe_vendor_options: false,
            uuid: client.uuid.clone(),
            stage: BootStage::HttpEfi,
        });
    }
    // A PXE ROM that sends neither option 93 nor an Arch field is old BIOS firmware.
    let file = match arch.unwrap_or(ClientArch::Bios) {
        ClientArch::Bios => config.bios_file.clone(),
        ClientArch::EfiX64 | ClientArch::EfiBc => config.efi_file.clone(),
        ClientArch::EfiArm64 => config.arm64_file.clone()?,
        _ => return None,
    };
    Some(BootDecision {
        filename: file,
        next_server: Some(config.next_server),
        // Firmware with an unusual vendor class still expects PXEClient back.
        vendor_class: Some("PXEClient"),
        pxe_vendor_options: true,
        uuid: client.uuid.clone(),
        stage: BootStage::Tftp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BootConfig {
        let mut c = BootConfig::new(
            Ipv4Addr::new(10, 0, 0, 1),
            "http://10.0.0.1:8080/boot.ipxe?mac=${mac}",
        );
        c.http_efi_url = Some("http://10.0.0.1:8080/ipxe.efi".into());
        c
    }

    fn client() -> ClientInfo {
        ClientInfo {
            mac: "52:54:00:00:00:01".parse().unwrap(),
            arch: None,
            vendor_class: None,
            is_ipxe: false,
            uuid: None,
        }
    }

    #[test]
    fn plain_dhcp_clients_get_no_boot_file() {
        assert_eq!(decide(&config(), &client()), None);
        let mut c = client();
        c.vendor_class = Some("udhcp 1.36.1".into());
        assert_eq!(decide(&config(), &c), None);
    }

    #[test]
    fn arch_picks_the_file() {
        let cases = [(0, "undionly.kpxe"), (7, "ipxe.efi"), (9, "ipxe.efi")];
        for (code, file) in cases {
            let mut c = client();
            c.arch = Some(ClientArch::from(code));
            c.vendor_class = Some(format!("PXEClient:Arch:{code:05}:UNDI:003016"));
            let d = decide(&config(), &c).unwrap();
            assert_eq!(d.filename, file, "arch {code}");
            assert_eq!(d.next_server, Some(Ipv4Addr::new(10, 0, 0, 1)));
            assert_eq!(d.vendor_class, Some("PXEClient"));
            assert!(d.pxe_vendor_options);
            assert_eq!(d.stage, BootStage::Tftp);
        }
    }

    #[test]
    fn arch_from_vendor_class_when_option_93_is_missing() {
        let mut c = client();
        c.vendor_class = Some("PXEClient:Arch:00007:UNDI:003016".into());
        assert_eq!(decide(&config(), &c).unwrap().filename, "ipxe.efi");
        c.vendor_class = Some("PXEClient".into());
        assert_eq!(decide(&config(), &c).unwrap().filename, "undionly.kpxe");
    }

    #[test]
    fn odd_vendor_class_with_arch_still_boots_and_gets_pxeclient_back() {
        let mut c = client();
        c.arch = Some(ClientArch::EfiX64);
        c.vendor_class = Some("AcmeBoot/1.0".into());
        let d = decide(&config(), &c).unwrap();
        assert_eq!(d.filename, "ipxe.efi");
        assert_eq!(d.vendor_class, Some("PXEClient"));
    }

    #[test]
    fn ipxe_gets_its_script_url_never_the_binary_again() {
        let mut c = client();
        c.arch = Some(ClientArch::Bios);
        c.vendor_class = Some("PXEClient:Arch:00000:UNDI:002001".into());
        c.is_ipxe = true;
        let d = decide(&config(), &c).unwrap();
        assert_eq!(
            d.filename,
            "http://10.0.0.1:8080/boot.ipxe?mac=52:54:00:00:00:01"
        );
        assert_eq!(d.stage, BootStage::IpxeScript);
        assert_eq!(d.next_server, None);
    }

    #[test]
    fn uefi_http_boot_gets_a_url_and_httpclient() {
        let mut c = client();
        c.arch = Some(ClientArch::EfiX64Http);
        c.vendor_class = Some("HTTPClient:Arch:00016:UNDI:003001".into());
        c.uuid = Some(vec![0; 17]);
        let d = decide(&config(), &c).unwrap();
        assert_eq!(d.filename, "http://10.0.0.1:8080/ipxe.efi");
        assert_eq!(d.vendor_class, Some("HTTPClient"));
        assert_eq!(d.uuid, Some(vec![0; 17]));
        let mut no_url = config();
        no_url.http_efi_url = None;
        assert_eq!(decide(&no_url, &c), None);
    }

    #[test]
    fn unknown_arch_gets_nothing() {
        let mut c = client();
        c.arch = Some(ClientArch::Other(2));
        assert_eq!(decide(&config(), &c), None);
    }
}
