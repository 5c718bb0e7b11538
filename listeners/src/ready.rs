//! The ready record (SPEC §9): one JSON line on stdout, and optionally a file written atomically,
//! so whoever started leash learns the bound addresses without racing it.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::Serialize;

/// `{"event":"ready","pid":…,"http":"127.0.0.1:41233","socks":…,"admin":…,"ui":…}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReadyRecord {
    event: &'static str,
    /// The process id.
    pub pid: u32,
    /// The HTTP proxy address.
    pub http: Option<SocketAddr>,
    /// The SOCKS5 proxy address.
    pub socks: Option<SocketAddr>,
    /// The admin API address.
    pub admin: Option<SocketAddr>,
    /// The approvals page's URL (`http://127.0.0.1:PORT/`), when the admin API runs.
    pub ui: Option<String>,
    /// The file holding the admin API's generated bearer token (never the token itself).
    pub admin_token_file: Option<PathBuf>,
    /// Whether TLS interception is on.
    pub mitm: bool,
    /// The CA bundle clients must trust, with MITM on: system roots, leash's CA, and the CAs
    /// leash's own environment trusted (`SSL_CERT_FILE`, `NODE_EXTRA_CA_CERTS`).
    pub ca_bundle: Option<PathBuf>,
    /// The leash CA certificate alone (`ca.pem`), with MITM on: what a system store would add.
    pub ca_cert: Option<PathBuf>,
    /// Each credential's variable and the placeholder the child gets in it (SPEC §17); never a
    /// secret.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub placeholders: std::collections::BTreeMap<String, String>,
}

impl ReadyRecord {
    /// The record for this process.
    pub fn new(
        http: Option<SocketAddr>,
        socks: Option<SocketAddr>,
        admin: Option<SocketAddr>,
    ) -> ReadyRecord {
        ReadyRecord {
            event: "ready",
            pid: std::process::id(),
            http,
            socks,
            admin,
            ui: admin.map(page_url),
            admin_token_file: None,
            mitm: false,
            ca_bundle: None,
            ca_cert: None,
            placeholders: Default::default(),
        }
    }

    /// The record as one JSON line (without the newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }

    /// Writes the line to `path` atomically: a reader sees nothing or the whole record.
    pub fn write_file(&self, path: &Path) -> io::Result<()> {
        let file_name = path
            .file_name()
            .ok_or_else(|| io::Error::other("ready file has no name"))?;
        let mut temp_name = file_name.to_owned();
        temp_name.push(format!(".{}.tmp", self.pid));
        let temp = path.with_file_name(temp_name);
        std::fs::write(&temp, format!("{}\n", self.to_line()))?;
        std::fs::rename(&temp, path)
    }
}

/// The approvals page on the admin listener at `admin`. A listener on an unspecified address
/// (`0.0.0.0`, only with its `dangerously_…` flag) is named by the loopback address of its family:
/// a browser cannot open `0.0.0.0`, and the admin API answers loopback names.
fn page_url(admin: SocketAddr) -> String {
    let ip = match admin.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/", SocketAddr::new(ip, admin.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_names_the_page_only_with_an_admin_listener() {
        let http = Some(SocketAddr::from(([127, 0, 0, 1], 4100)));
        let without = ReadyRecord::new(http, None, None);
        assert_eq!(without.ui, None);
        assert!(without.to_line().contains(r#""ui":null"#));
        for (admin, ui) in [
            ("127.0.0.1:4102", "http://127.0.0.1:4102/"),
            ("[::1]:4102", "http://[::1]:4102/"),
            ("0.0.0.0:4102", "http://127.0.0.1:4102/"),
            ("[::]:4102", "http://[::1]:4102/"),
        ] {
            let record = ReadyRecord::new(http, None, Some(admin.parse().unwrap()));
            assert_eq!(record.ui.as_deref(), Some(ui), "{admin}");
        }
    }
}
