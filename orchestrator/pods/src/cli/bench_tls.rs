//! `herd bench pods --tls`: the run's own PKI — a CA, the API's member
//! certificate for 127.0.0.1, and root's bundle for the bench's client and
//! kubectl — so the API is measured as agents serve it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `--tls`: the API's server configuration (a member certificate for
/// 127.0.0.1 from a CA made for the run) and root's, for the bench's own
/// client and for kubectl.
pub struct BenchTls {
    pub server: Arc<herd_pki::tls::ServerConfig>,
    pub client: Arc<herd_pki::tls::ClientConfig>,
    pub kubeconfig: PathBuf,
}

impl BenchTls {
    pub fn make(dir: &Path, base: &str) -> anyhow::Result<BenchTls> {
        use herd_pki::ca::LEAF_VALIDITY;
        use herd_pki::tls::{ALPN_HTTP1, ClientAuth, client_config, server_config};
        herd_pki::install_crypto_provider();
        let ca = herd_pki::ClusterCa::generate("bench")?;
        let member = herd_pki::Identity::Member("bench".into());
        let leaf = ca.issue(&member, &[], &[[127, 0, 0, 1].into()], LEAF_VALIDITY)?;
        let out = dir.join("pki");
        let targets = herd_pki::bundle::Targets {
            endpoints: &[],
            api_server: base,
        };
        herd_pki::bundle::write_client(&ca, "root", &out, &targets, LEAF_VALIDITY)?;
        let root = herd_pki::CertKey {
            cert_pem: std::fs::read_to_string(out.join("root.crt"))?,
            key_pem: std::fs::read_to_string(out.join("root.key"))?,
        };
        Ok(BenchTls {
            server: server_config(
                &ca.pair.cert_pem,
                &leaf,
                ClientAuth::Optional,
                &[ALPN_HTTP1],
            )?,
            client: client_config(&ca.pair.cert_pem, Some(&root), &[ALPN_HTTP1])?,
            kubeconfig: out.join("kubeconfig"),
        })
    }
}
