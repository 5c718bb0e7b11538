//! Leaf certificates for intercepted hosts: issued by the CA on first use, one key pair reused for
//! all of them, each wrapped in a rustls server config and kept in a small LRU cache.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use policy::Host;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
use rustls::ServerConfig;
#[cfg(test)]
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::{ca::CertificateAuthority, crypto_provider, error::MitmError};

/// Issues and caches the certificates leash shows to intercepted clients.
pub struct LeafIssuer {
    ca: CertificateAuthority,
    key: KeyPair,
    cache: Mutex<Lru>,
}

impl std::fmt::Debug for LeafIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafIssuer")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// Least-recently-used server configs by host. Eviction scans, but only on a miss when full.
struct Lru {
    capacity: usize,
    tick: u64,
    entries: HashMap<Host, (Arc<ServerConfig>, u64)>,
}

impl LeafIssuer {
    /// An issuer for `ca`, caching up to `capacity` hosts.
    pub fn new(ca: CertificateAuthority, capacity: usize) -> Result<LeafIssuer, MitmError> {
        let key = KeyPair::generate().map_err(|e| MitmError::Certificate(e.to_string()))?;
        let cache = Lru {
            capacity: capacity.max(1),
            tick: 0,
            entries: HashMap::new(),
        };
        Ok(LeafIssuer {
            ca,
            key,
            cache: Mutex::new(cache),
        })
    }

    /// The CA.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// The server config for `host`, from the cache or freshly issued.
    pub fn server_config(&self, host: &Host) -> Result<Arc<ServerConfig>, MitmError> {
        if let Some(config) = self.cache.lock().expect("leaf cache").get(host) {
            return Ok(config);
        }
        // Issued outside the lock: signing is the slow part, and two racing issues are harmless.
        let config = self.issue(host)?;
        self.cache
            .lock()
            .expect("leaf cache")
            .put(host.clone(), config.clone());
        Ok(config)
    }

    /// A new leaf and server config for `host`, bypassing the cache.
    pub fn issue(&self, host: &Host) -> Result<Arc<ServerConfig>, MitmError> {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![san(host)?];
        params
            .distinguished_name
            .push(DnType::CommonName, host.to_string());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(30);
        let (issuer, issuer_key) = self.ca.issuer();
        let leaf = params
            .signed_by(&self.key, issuer, issuer_key)
            .map_err(|e| MitmError::Certificate(e.to_string()))?;
        let chain = vec![CertificateDer::from(leaf.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| MitmError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| MitmError::Tls(e.to_string()))?;
        // HTTP/2 first (SPEC §15): the HTTP proxy serves either, per the client's choice.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        resume_with_tickets(&mut config)?;
        Ok(Arc::new(config))
    }
}

/// A client that comes back (every `git fetch`, every `curl` of an agent) resumes its TLS session
/// with a ticket instead of a full handshake: no certificate sent, no signature made (issue 18,
/// `mitm_resume_rate`). Each leaf has its own ticket keys (rotated by rustls every few hours), so
/// a ticket issued for one host never resumes a session in another host's tunnel, and tickets
/// hold the session themselves: nothing per client is stored in leash. rustls' two tickets per
/// handshake stay: a client opening connections in parallel spends one per resumption (with one,
/// 86 % of `mitm_resume_rate`'s connections resumed, against 99.5 % directly).
fn resume_with_tickets(config: &mut ServerConfig) -> Result<(), MitmError> {
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| MitmError::Tls(e.to_string()))?;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(())
}

fn san(host: &Host) -> Result<SanType, MitmError> {
    match host {
        Host::Name(name) => name
            .to_string()
            .try_into()
            .map(SanType::DnsName)
            .map_err(|e: rcgen::Error| MitmError::Certificate(e.to_string())),
        Host::Ip(ip) => Ok(SanType::IpAddress(*ip)),
        Host::ScopedIp(ip) => Ok(SanType::IpAddress(IpAddr::V6(*ip))),
    }
}

impl Lru {
    fn get(&mut self, host: &Host) -> Option<Arc<ServerConfig>> {
        self.tick += 1;
        let tick = self.tick;
        let (config, used) = self.entries.get_mut(host)?;
        *used = tick;
        Some(config.clone())
    }

    fn put(&mut self, host: Host, config: Arc<ServerConfig>) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&host) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(h, _)| h.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.tick += 1;
        self.entries.insert(host, (config, self.tick));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_cached_and_evicted_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(&dir.path().join("ca")).unwrap();
        let issuer = LeafIssuer::new(ca, 2).unwrap();
        let host = |h: &str| Host::parse(h).unwrap();
        let a = issuer.server_config(&host("a.test")).unwrap();
        assert!(
            Arc::ptr_eq(&a, &issuer.server_config(&host("a.test")).unwrap()),
            "cached"
        );
        issuer.server_config(&host("b.test")).unwrap();
        issuer.server_config(&host("a.test")).unwrap();
        issuer.server_config(&host("c.test")).unwrap();
        let cache = issuer.cache.lock().unwrap();
        assert!(
            cache.entries.contains_key(&host("a.test")),
            "recently used stays"
        );
        assert!(
            !cache.entries.contains_key(&host("b.test")),
            "least recently used goes"
        );
        drop(cache);
        let alpn = &issuer
            .server_config(&host("127.0.0.1"))
            .unwrap()
            .alpn_protocols;
        assert_eq!(
            alpn,
            &[b"h2".to_vec(), b"http/1.1".to_vec()],
            "h2 is offered"
        );
        issuer.server_config(&host("[::1]")).unwrap();
    }

    /// An in-memory handshake to `name` (then the tickets the server sends after it); how it
    /// went, or the first error.
    fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> Result<rustls::HandshakeKind, rustls::Error> {
        let name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut client = rustls::ClientConnection::new(client, name)?;
        let mut server = rustls::ServerConnection::new(server)?;
        let mut buf = Vec::new();
        for _ in 0..10 {
            buf.clear();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets()?;
            buf.clear();
            server.write_tls(&mut buf).unwrap();
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() && !server.wants_write() {
                break;
            }
        }
        Ok(client.handshake_kind().expect("handshake done"))
    }

    #[test]
    fn a_returning_client_resumes_with_a_ticket_for_the_same_host_only() {
        use rustls::HandshakeKind::{Full, Resumed};
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(&dir.path().join("ca")).unwrap();
        let issuer = LeafIssuer::new(ca, 8).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        let ca_der = CertificateDer::from_pem_slice(issuer.ca().cert_pem().as_bytes()).unwrap();
        roots.add(ca_der).unwrap();
        // A client as rustls makes them by default: it keeps the tickets it is given.
        let client = Arc::new(
            rustls::ClientConfig::builder_with_provider(crypto_provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let host = |h: &str| Host::parse(h).unwrap();
        let a = issuer.server_config(&host("a.test")).unwrap();
        assert!(a.ticketer.enabled(), "tickets, not a session cache");
        assert_eq!(handshake(a.clone(), client.clone(), "a.test"), Ok(Full));
        assert_eq!(handshake(a.clone(), client.clone(), "a.test"), Ok(Resumed));
        assert_eq!(handshake(a, client.clone(), "a.test"), Ok(Resumed));
        // a.test's ticket shown in b.test's tunnel: b.test's keys cannot open it, so the client
        // gets b.test's certificate (and, asking for a.test, refuses it). Never a resumption.
        let b = issuer.server_config(&host("b.test")).unwrap();
        let crossed = handshake(b, client, "a.test");
        assert!(crossed != Ok(Resumed), "{crossed:?}");
        assert!(crossed.is_err(), "{crossed:?}");
    }
}
