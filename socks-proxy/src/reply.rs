//! The one place an outcome becomes a SOCKS5 reply (SPEC §6).

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddr},
};

use listeners::DialError;
use policy::{BlockReason, Decision};

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
    Blocked(&'a BlockReason),
    Dial(&'a DialError),
    CommandNotSupported,
    AddressTypeNotSupported,
    /// Anything else that went wrong on leash's side.
    Failed,
}

impl<'a> Outcome<'a> {
    /// The outcome of a refusing decision (an allow here would be a bug: a general failure).
    pub(crate) fn refused(decision: &'a Decision) -> Outcome<'a> {
        match decision.reason() {
            Some(reason) => Outcome::Blocked(reason),
            None => Outcome::Failed,
        }
    }
}

/// The reply code for an outcome.
pub(crate) fn reply_code(outcome: &Outcome<'_>) -> u8 {
    match outcome {
        Outcome::Granted => REPLY_SUCCEEDED,
        Outcome::Blocked(reason) => blocked_code(reason),
        Outcome::Dial(DialError::Blocked(decision)) => reply_code(&Outcome::refused(decision)),
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
        Outcome::Dial(DialError::ConnectFailed(_)) | Outcome::Failed => REPLY_GENERAL_FAILURE,
        // The upstream proxy (SPEC §16) failing or refusing leash's credentials is leash's side
        // failing; its refusal of the target is a refusal by (its) rule set.
        Outcome::Dial(DialError::UpstreamProxyFailed(_) | DialError::UpstreamProxyAuth) => {
            REPLY_GENERAL_FAILURE
        }
        Outcome::Dial(DialError::UpstreamProxyRefused(_)) => REPLY_NOT_ALLOWED,
        Outcome::CommandNotSupported => REPLY_COMMAND_NOT_SUPPORTED,
        Outcome::AddressTypeNotSupported => REPLY_ADDRESS_TYPE_NOT_SUPPORTED,
    }
}

/// The reply code for a block. RFC 1928 has one code for a refusal by rule set; every reason
/// gets it (the log line says which), and a new reason must say here whether it does too.
fn blocked_code(reason: &BlockReason) -> u8 {
    match reason {
        BlockReason::AllowlistMiss
        | BlockReason::Denylist { .. }
        | BlockReason::LocalAddress { .. }
        | BlockReason::MethodNotAllowed { .. }
        | BlockReason::ProtocolNotAllowed
        | BlockReason::MitmRequired
        | BlockReason::InvalidTarget(_)
        | BlockReason::AuthFailed
        | BlockReason::InvalidRequest { .. }
        | BlockReason::HostMismatch
        | BlockReason::Declined
        | BlockReason::CredentialScope { .. } => REPLY_NOT_ALLOWED,
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

    /// One row per reason: its reply code. The exhaustive match makes a new reason state its
    /// code here.
    fn row(reason: &BlockReason) -> u8 {
        match reason {
            BlockReason::AllowlistMiss => 0x02,
            BlockReason::Denylist { .. } => 0x02,
            BlockReason::LocalAddress { .. } => 0x02,
            BlockReason::MethodNotAllowed { .. } => 0x02,
            BlockReason::ProtocolNotAllowed => 0x02,
            BlockReason::MitmRequired => 0x02,
            BlockReason::InvalidTarget(_) => 0x02,
            BlockReason::AuthFailed => 0x02,
            BlockReason::InvalidRequest { .. } => 0x02,
            BlockReason::HostMismatch => 0x02,
            BlockReason::Declined => 0x02,
            BlockReason::CredentialScope { .. } => 0x02,
        }
    }

    #[test]
    fn every_reason_has_its_reply_before_and_after_dns() {
        for code in BlockReason::CODES {
            let reason: BlockReason = code.parse().expect("a code");
            assert_eq!(
                reply_code(&Outcome::Blocked(&reason)),
                row(&reason),
                "{code}"
            );
            let after_dns = DialError::Blocked(Decision::Deny(reason.clone()));
            assert_eq!(
                reply_code(&Outcome::Dial(&after_dns)),
                row(&reason),
                "{code}"
            );
        }
        let allow = Decision::Allow { rule: "x".into() };
        assert_eq!(reply_code(&Outcome::refused(&allow)), REPLY_GENERAL_FAILURE);
    }

    #[test]
    fn codes_follow_the_spec() {
        let busy = DialError::DnsBusy(LookupBound::PerClient(32));
        let blocked = DialError::Blocked(Decision::Deny(BlockReason::AllowlistMiss));
        let refused = DialError::ConnectFailed(io::Error::from(ErrorKind::ConnectionRefused));
        let reset = DialError::ConnectFailed(io::Error::from(ErrorKind::ConnectionReset));
        let upstream_failed = DialError::UpstreamProxyFailed(io::Error::from(ErrorKind::TimedOut));
        let cases = [
            (Outcome::Granted, 0x00),
            (Outcome::Blocked(&BlockReason::AllowlistMiss), 0x02),
            (Outcome::Dial(&blocked), 0x02),
            (Outcome::Dial(&DialError::DnsFailed("x".into())), 0x04),
            (Outcome::Dial(&refused), 0x05),
            (Outcome::Dial(&DialError::ConnectTimeout), 0x06),
            (Outcome::Dial(&DialError::DnsTimeout), 0x04),
            (Outcome::Dial(&upstream_failed), 0x01),
            (Outcome::Dial(&DialError::UpstreamProxyAuth), 0x01),
            (Outcome::Dial(&DialError::UpstreamProxyRefused(403)), 0x02),
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
            reply(&Outcome::Blocked(&BlockReason::Declined), None),
            [5, 2, 0, 1, 0, 0, 0, 0, 0, 0]
        );
    }
}
