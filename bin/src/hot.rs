//! The policy the proxies decide with, swapped atomically on reload or mode change (`arc-swap`):
//! each request takes one snapshot and uses it throughout, so it never sees a mix of two policies.

use std::{net::IpAddr, sync::Arc};

use arc_swap::ArcSwap;
use policy::{Decision, Explanation, Mode, Policy, PolicyEngine, Request, Target};

/// A `PolicyEngine` whose policy can be replaced while requests are in flight.
#[derive(Debug)]
pub struct HotPolicy {
    current: ArcSwap<Policy>,
}

impl HotPolicy {
    /// Starts with `policy`.
    pub fn new(policy: Policy) -> HotPolicy {
        HotPolicy {
            current: ArcSwap::from_pointee(policy),
        }
    }

    /// Replaces the policy; requests already holding a snapshot finish with the old one.
    pub fn swap(&self, policy: Policy) {
        self.current.store(Arc::new(policy));
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<Policy> {
        self.current.load_full()
    }
}

impl PolicyEngine for HotPolicy {
    fn decide(&self, request: &Request<'_>) -> Decision {
        self.current.load().decide(request)
    }

    fn decide_approved(&self, request: &Request<'_>, approval: Arc<str>) -> Decision {
        self.current.load().decide_approved(request, approval)
    }

    fn vet(&self, target: &Target, addrs: &[IpAddr]) -> Decision {
        self.current.load().vet(target, addrs)
    }

    fn explain(&self, request: &Request<'_>) -> Explanation {
        self.current.load().explain(request)
    }

    fn mode(&self) -> Mode {
        self.current.load().mode()
    }

    fn inspects(&self, target: &Target) -> bool {
        self.current.load().inspects(target)
    }

    fn snapshot(&self) -> Arc<dyn PolicyEngine> {
        self.current.load_full()
    }
}
