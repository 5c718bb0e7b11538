//! The cost an intercepted connection pays for its certificate: a full in-memory TLS handshake
//! with the leaf from the cache, against issuing a fresh leaf first (a cache miss).

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::{hint::black_box, sync::Arc};

use criterion::{criterion_group, criterion_main, Criterion};
use mitm::{crypto_provider, CertificateAuthority, LeafIssuer};
use policy::Host;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};

fn client_config(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA pem"))
        .expect("root");
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Full handshakes every time: session resumption would favour the cached config for a reason
    // that has nothing to do with the certificate.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// Drives a client and a server connection through a handshake, in memory.
fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>, name: &str) {
    let name = ServerName::try_from(name.to_owned()).expect("name");
    let mut client = ClientConnection::new(client, name).expect("client");
    let mut server = ServerConnection::new(server).expect("server");
    let mut buf = Vec::new();
    while client.is_handshaking() || server.is_handshaking() {
        buf.clear();
        client.write_tls(&mut buf).expect("client writes");
        server.read_tls(&mut buf.as_slice()).expect("server reads");
        server.process_new_packets().expect("server processes");
        buf.clear();
        server.write_tls(&mut buf).expect("server writes");
        client.read_tls(&mut buf.as_slice()).expect("client reads");
        client.process_new_packets().expect("client processes");
    }
}

fn bench_leaf(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = CertificateAuthority::load_or_create(&dir.path().join("ca")).expect("CA");
    let client = client_config(ca.cert_pem());
    let issuer = LeafIssuer::new(ca, 1024).expect("issuer");
    let host = Host::parse("bench.example").expect("host");
    issuer.server_config(&host).expect("warm the cache");
    let mut group = c.benchmark_group("mitm_handshake");
    group.sample_size(30);
    group.bench_function("cached_leaf", |b| {
        b.iter(|| {
            handshake(
                issuer.server_config(black_box(&host)).expect("leaf"),
                client.clone(),
                "bench.example",
            )
        })
    });
    group.bench_function("uncached_leaf", |b| {
        b.iter(|| {
            handshake(
                issuer.issue(black_box(&host)).expect("leaf"),
                client.clone(),
                "bench.example",
            )
        })
    });
    group.bench_function("issue_only", |b| {
        b.iter(|| issuer.issue(black_box(&host)).expect("leaf"))
    });
    group.finish();
}

criterion_group!(benches, bench_leaf);
criterion_main!(benches);
