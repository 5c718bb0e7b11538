//! The one place an outcome becomes a SOCKS5 reply (SPEC §6).

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddr},
};

use listeners::DialError;

use crate::wire::{
    encode_addr, REPLY_ADDRESS_TYPE_NOT_SUPPORTED, REPLY_COMMAND_NOT_SUPPORTED,
    REPLY_CONNECTION_REFUSED, REPLY_GENERAL_FAILURE, REPLY_HOST_UNREACHABLE, REPLY_NOT_ALLOWED,
    REPLY_SUCCEEDED, REPLY_TTL_EXPIRED, VERSION,
};

/// How a request ended, as far as the client is told.
#[derive(Debug)]
pub(crate) enum Outcome<'a> {
    Granted,
    /// Refused by policy (before or after DNS), or an invalid target.
    Blocked,
    Dial(&'a DialError),
    CommandNotSupported,
    AddressTypeNotSupported,
    /// Anything else that went wrong on leash's side.
    Failed,
}

/// The reply code for an outcome.
pub(crate) fn reply_code(outcome: &Outcome<'_>) -> u8 {
    match outcome {
        Outcome::Granted => REPLY_SUCCEEDED,
        Outcome::Blocked | Outcome::Dial(DialError::Blocked(_)) => REPLY_NOT_ALLOWED,
        // A lookup that fails or times out is a DNS failure (SPEC §1.4, §6).
        // So does one refused by a bound on the lookups in flight.
        Outcome::Dial(DialError::DnsFailed(_) | DialError::DnsTimeout | DialError::DnsBusy(_)) => {
            REPLY_HOST_UNREACHABLE
        }
        Outcome::Dial(DialError::ConnectTimeout) => REPLY_TTL_EXPIRED,
        Outcome::Dial(DialError::ConnectFailed(error))
            if error.kind() == ErrorKind::ConnectionRefused =>
        {
            REPLY_CONNECTION_REFUSED
        }
        Outcome::Dial(_) | Outcome::Failed => REPLY_GENERAL_FAILURE,
        Outcome::CommandNotSupported => REPLY_COMMAND_NOT_SUPPORTED,
        Outcome::AddressTypeNotSupported => REPLY_ADDRESS_TYPE_NOT_SUPPORTED,
    }
}

/// `VER REP RSV ATYP BND.ADDR BND.PORT`; the bound address is `0.0.0.0:0` when there is none.
pub(crate) fn reply(outcome: &Outcome<'_>, bound: Option<SocketAddr>) -> Vec<u8> {
    let mut bytes = vec![VERSION, reply_code(outcome), 0];
    encode_addr(
        bound.unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
        &mut bytes,
    );
    bytes
}

#[cfg(test)]
mod tests {
    use std::io;

    use listeners::LookupBound;
    use policy::{BlockReason, Decision};

    use super::*;

    #[test]
    fn codes_follow_the_spec() {
        let busy = DialError::DnsBusy(LookupBound::PerClient(32));
        let blocked = DialError::Blocked(Decision::Deny(BlockReason::AllowlistMiss));
        let refused = DialError::ConnectFailed(io::Error::from(ErrorKind::ConnectionRefused));
        let reset = DialError::ConnectFailed(io::Error::from(ErrorKind::ConnectionReset));
        let cases = [
            (Outcome::Granted, 0x00),
            (Outcome::Blocked, 0x02),
            (Outcome::Dial(&blocked), 0x02),
            (Outcome::Dial(&DialError::DnsFailed("x".into())), 0x04),
            (Outcome::Dial(&refused), 0x05),
            (Outcome::Dial(&DialError::ConnectTimeout), 0x06),
            (Outcome::Dial(&DialError::DnsTimeout), 0x04),
            (Outcome::Dial(&busy), 0x04),
            (Outcome::CommandNotSupported, 0x07),
            (Outcome::AddressTypeNotSupported, 0x08),
            (Outcome::Dial(&reset), 0x01),
            (Outcome::Failed, 0x01),
        ];
        for (outcome, code) in cases {
            assert_eq!(reply_code(&outcome), code, "{outcome:?}");
        }
        assert_eq!(
            reply(&Outcome::Blocked, None),
            [5, 2, 0, 1, 0, 0, 0, 0, 0, 0]
        );
    }
}
