use proptest::prelude::*;

use super::*;
use crate::wire::Address;

/// Runs the whole handshake over `input` as the client's bytes; what leash writes is kept.
fn handshake(input: &[u8], token: Option<&str>) -> Result<Requested, HandshakeError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut stream = tokio::io::join(input, Vec::new());
        let greeting = greet(&mut stream).await?;
        greeting
            .negotiate(&mut stream, policy::ProxyAuth::Free { token })
            .await?;
        read_request(&mut stream).await
    })
}

#[test]
fn a_well_formed_handshake_reads_the_request() {
    let bytes = [
        &[5u8, 1, 2][..],
        &[1, 2, b'a', b'1', 3, b't', b'o', b'k'],
        &[5, 1, 0, 3, 3, b'a', b'.', b'b', 1, 187],
    ]
    .concat();
    let requested = handshake(&bytes, Some("tok")).expect("accepted");
    assert_eq!(requested.command, Command::Connect);
    assert_eq!(requested.address, Address::Domain(b"a.b".to_vec(), 443));
    assert!(matches!(
        handshake(&[4, 1, 0, 80], None),
        Err(HandshakeError::NotSocks5 { first: 4 })
    ));
    assert!(matches!(
        handshake(&[5, 1, 0], Some("tok")),
        Err(HandshakeError::NoAcceptableMethod)
    ));
}

fn fuzz_config() -> ProptestConfig {
    let cases = std::env::var("LEASH_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(512);
    ProptestConfig::with_cases(cases)
}

/// A plausible handshake with random damage: most cases get past the first checks.
fn damaged_handshake() -> impl Strategy<Value = Vec<u8>> {
    let good = [
        &[5u8, 2, 0, 2][..],
        &[1, 2, b'a', b'1', 3, b't', b'o', b'k'],
        &[5, 1, 0, 3, 4, b'x', b'.', b'y', b'z', 0, 80],
    ]
    .concat();
    (
        prop::collection::vec((0..good.len(), any::<u8>()), 0..4),
        0..=good.len(),
    )
        .prop_map(move |(edits, cut)| {
            let mut bytes = good.clone();
            for (at, byte) in edits {
                bytes[at] = byte;
            }
            bytes.truncate(cut.max(1));
            bytes
        })
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn fuzz_the_handshake_never_panics_or_hangs(bytes in prop::collection::vec(any::<u8>(), 0..300), damaged in damaged_handshake()) {
        // Finite input: every read ends at EOF, so finishing at all proves there is no hang.
        for input in [&bytes, &damaged] {
            let _ = handshake(input, None);
            let _ = handshake(input, Some("tok"));
        }
    }

    #[test]
    fn fuzz_address_parsing_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(Some((address, used))) = Address::parse(&bytes) {
            prop_assert!(used <= bytes.len());
            let _ = address.to_target();
            let _ = address.raw_host();
        }
    }
}
