//! `lint` (SPEC §1.5): warnings about a policy that probably does not say what its author meant.
//! Lint never changes a decision.

use std::{fmt, sync::Arc};

use crate::{
    decision::Mode,
    local::{is_local_ip, is_local_name, is_local_net},
    matcher::RuleSet,
    policy::{AllowLocal, Policy},
    rule::{Rule, RuleHost},
};

/// One lint warning.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LintWarning {
    /// `*` in the deny list blocks everything.
    DenyEverything,
    /// A rule that another rule of the same list already covers.
    Shadowed {
        /// `allow` or `deny`.
        list: &'static str,
        /// The redundant rule.
        rule: Arc<str>,
        /// The rule that covers it.
        by: Arc<str>,
    },
    /// An allow rule that a deny rule fully covers, so it can never allow anything.
    AllowCoveredByDeny {
        /// The dead allow rule.
        allow: Arc<str>,
        /// The deny rule.
        deny: Arc<str>,
    },
    /// An allow rule for local targets while `allow_local` is off: local protection refuses them.
    DeadLocalAllow {
        /// The dead allow rule.
        rule: Arc<str>,
    },
    /// An allow rule for local targets that the `allow_local` list does not cover: local
    /// protection refuses what it names (and `allow_local` opens what it covers by itself).
    LocalAllowNotCovered {
        /// The dead allow rule.
        rule: Arc<str>,
    },
    /// `*` in the allow list next to other allow rules, which then add nothing.
    WildcardWithOthers,
    /// Limited mode without TLS interception: every `CONNECT` is refused (`mitm_required`) and
    /// every SOCKS5 connection too (`protocol_not_allowed`).
    LimitedWithoutMitm,
}

impl fmt::Display for LintWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LintWarning::DenyEverything => f.write_str("`*` in deny blocks every request"),
            LintWarning::Shadowed { list, rule, by } => {
                write!(f, "{list} rule `{rule}` is already covered by `{by}`")
            }
            LintWarning::AllowCoveredByDeny { allow, deny } => {
                write!(
                    f,
                    "allow rule `{allow}` can never match: deny rule `{deny}` covers it"
                )
            }
            LintWarning::DeadLocalAllow { rule } => write!(
                f,
                "allow rule `{rule}` only names local targets, which allow_local = false refuses"
            ),
            LintWarning::LocalAllowNotCovered { rule } => write!(
                f,
                "allow rule `{rule}` names local targets that allow_local does not cover: local protection refuses them whatever the allow list says (add them to allow_local)"
            ),
            LintWarning::WildcardWithOthers => {
                f.write_str("`*` in allow makes every other allow rule redundant")
            }
            LintWarning::LimitedWithoutMitm => f.write_str(
                "mode = \"limited\" without [mitm] enabled: every HTTPS CONNECT is refused with mitm_required and every SOCKS5 connection with protocol_not_allowed; only plain-HTTP GET, HEAD and OPTIONS get through",
            ),
        }
    }
}

/// Every warning for `policy`, in a stable order.
pub fn lint(policy: &Policy) -> Vec<LintWarning> {
    let (allow, deny) = (policy.allow_set(), policy.deny_set());
    let mut warnings = Vec::new();
    if deny.rules().iter().any(|r| *r.host() == RuleHost::Any) {
        warnings.push(LintWarning::DenyEverything);
    }
    let allow_any = allow.rules().iter().any(|r| *r.host() == RuleHost::Any);
    if allow_any && allow.rules().len() > 1 {
        warnings.push(LintWarning::WildcardWithOthers);
    }
    shadowed("allow", allow, allow_any, &mut warnings);
    shadowed("deny", deny, false, &mut warnings);
    for (id, rule) in allow.rules().iter().enumerate() {
        if let Some(by) = covering_rule(deny, rule, None) {
            warnings.push(LintWarning::AllowCoveredByDeny {
                allow: allow.name(id as u32).clone(),
                deny: by,
            });
        }
        warnings.extend(dead_local(policy, rule, allow.name(id as u32)));
    }
    if policy.mode() == Mode::Limited && !policy.tls_inspection() {
        warnings.push(LintWarning::LimitedWithoutMitm);
    }
    warnings
}

/// An allow rule that names only local targets is refused at step 3 wherever `allow_local` does
/// not cover it, and where it does, `allow_local` opens the target by itself.
fn dead_local(policy: &Policy, rule: &Rule, name: &Arc<str>) -> Option<LintWarning> {
    if !only_local(rule) {
        return None;
    }
    match policy.allow_local() {
        AllowLocal::None => Some(LintWarning::DeadLocalAllow { rule: name.clone() }),
        AllowLocal::All => None,
        AllowLocal::Only(_) => {
            let local = policy.local_rule_set()?;
            covering_rule(local, rule, None)
                .is_none()
                .then(|| LintWarning::LocalAllowNotCovered { rule: name.clone() })
        }
    }
}

/// Rules covered by another rule of the same list; `*` itself is reported once, not per rule.
fn shadowed(list: &'static str, set: &RuleSet, skip_any: bool, warnings: &mut Vec<LintWarning>) {
    for (id, rule) in set.rules().iter().enumerate() {
        let id = id as u32;
        let by = covering_rule(set, rule, Some(id)).filter(|by| !(skip_any && &**by == "*"));
        if let Some(by) = by {
            warnings.push(LintWarning::Shadowed {
                list,
                rule: set.name(id).clone(),
                by,
            });
        }
    }
}

fn covering_rule(set: &RuleSet, rule: &Rule, skip: Option<u32>) -> Option<Arc<str>> {
    set.candidates(rule.host())
        .into_iter()
        .find(|&id| Some(id) != skip && set.rule(id).covers(rule))
        .map(|id| set.name(id).clone())
}

fn only_local(rule: &Rule) -> bool {
    match rule.host() {
        RuleHost::Exact(name) => is_local_name(name),
        // Every subdomain of `localhost` (or of one of its subdomains) is local.
        RuleHost::ApexAndSubdomains(base) | RuleHost::Subdomains(base) => {
            is_local_name(&format!("x.{base}"))
        }
        RuleHost::Ip(ip) => is_local_ip(*ip),
        RuleHost::Net(net) => is_local_net(net),
        RuleHost::Any => false,
    }
}

#[cfg(test)]
mod tests;
