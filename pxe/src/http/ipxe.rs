//! iPXE scripts: the generic chain script, a machine's boot script, and the
//! boot-from-disk script for installed machines.

use std::fmt::Write;

use crate::inventory::Mac;
use crate::profile::Profile;

/// Script for a request without a MAC (what DHCP hands to iPXE): iPXE
/// expands its own variables and asks again with the machine's identity.
pub fn chain(base_url: &str) -> String {
    format!(
        "#!ipxe\nchain {base_url}/boot.ipxe?mac=${{mac:hexhyp}}&uuid=${{uuid}}&ip=${{net0/ip}}&hostname=${{hostname}}&arch=${{buildarch}}&platform=${{platform}}\n"
    )
}

/// Boots `profile`'s kernel and initramfs with the rendered command line.
pub fn boot(base_url: &str, profile: &Profile, mac: Mac, cmdline: &str) -> String {
    let mut s = String::from("#!ipxe\n");
    let _ = writeln!(s, "echo herd: booting profile {} for {mac}", profile.id);
    // Named initrds plus `initrd=` on the command line work for both BIOS
    // and UEFI (the EFI stub only loads initrds named there).
    let mut args = String::new();
    for i in 0..profile.initrd.len() {
        let _ = write!(args, " initrd=initrd{i}");
    }
    let _ = writeln!(
        s,
        "kernel {base_url}/assets/{}/kernel?mac={mac}{args} {cmdline}",
        profile.id
    );
    for i in 0..profile.initrd.len() {
        let _ = writeln!(
            s,
            "initrd --name initrd{i} {base_url}/assets/{}/initrd/{i}?mac={mac}",
            profile.id
        );
    }
    s.push_str("boot\n");
    s
}

/// After a verified install: leave PXE and boot the first local disk.
/// UEFI firmware moves on to its next boot entry when iPXE exits; BIOS
/// needs an explicit `sanboot` of drive 0x80.
pub fn local_disk(mac: Mac) -> String {
    format!(
        "#!ipxe\necho herd: {mac} is installed, booting from local disk\niseq ${{platform}} efi && exit ||\nsanboot --no-describe --drive 0x80 || exit\n"
    )
}

/// When no group matches and there is no default group: say so on the
/// console and fall back to the next boot device instead of looping.
pub fn no_profile(mac: Mac) -> String {
    format!(
        "#!ipxe\necho herd: no profile matches {mac} and there is no default group\nsleep 10\nexit\n"
    )
}
