//! ACLs: principal or group × topic (literal or prefix) × operation.
//! Nothing is allowed unless a rule allows it.

use sluice_config::{AclRule, Operation};

use super::Principal;

/// What a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// One topic.
    Topic(&'a str),
    /// No one topic: listings, topic creation, admin routes. Only rules
    /// without `topic` or `prefix` cover it.
    Cluster,
}

/// The configured rules.
#[derive(Debug, Default)]
pub struct Acl {
    rules: Vec<AclRule>,
}

impl Acl {
    /// The rules of `[auth].acls`.
    pub fn new(rules: Vec<AclRule>) -> Self {
        Self { rules }
    }

    /// Whether some rule allows `principal` to do `operation` on `resource`.
    pub fn allows(
        &self,
        principal: &Principal,
        operation: Operation,
        resource: Resource<'_>,
    ) -> bool {
        self.rules.iter().any(|rule| {
            rule.operations.contains(&operation)
                && matches_principal(rule, principal)
                && matches_resource(rule, resource)
        })
    }
}

fn matches_principal(rule: &AclRule, principal: &Principal) -> bool {
    if let Some(name) = &rule.principal {
        return name == "*" || *name == principal.name;
    }
    rule.group
        .as_ref()
        .is_some_and(|g| principal.groups.iter().any(|pg| pg == g))
}

fn matches_resource(rule: &AclRule, resource: Resource<'_>) -> bool {
    match (&rule.topic, &rule.prefix, resource) {
        (None, None, _) => true,
        (Some(t), _, Resource::Topic(topic)) => t == topic,
        (_, Some(p), Resource::Topic(topic)) => topic.starts_with(p.as_str()),
        (_, _, Resource::Cluster) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PrincipalSource;

    fn rule(
        principal: Option<&str>,
        group: Option<&str>,
        topic: Option<&str>,
        prefix: Option<&str>,
        ops: &[Operation],
    ) -> AclRule {
        AclRule {
            principal: principal.map(Into::into),
            group: group.map(Into::into),
            topic: topic.map(Into::into),
            prefix: prefix.map(Into::into),
            operations: ops.to_vec(),
        }
    }

    fn who(name: &str, groups: &[&str]) -> Principal {
        Principal {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            source: PrincipalSource::ApiKey,
        }
    }

    #[test]
    fn deny_by_default_and_each_dimension_matters() {
        use Operation::*;
        let acl = Acl::new(vec![
            rule(
                Some("dev-1"),
                None,
                None,
                Some("devices.dev-1."),
                &[Produce],
            ),
            rule(
                None,
                Some("readers"),
                Some("orders"),
                None,
                &[Consume, Describe],
            ),
            rule(Some("ops"), None, None, None, &[Admin]),
        ]);
        let dev = who("dev-1", &[]);
        assert!(acl.allows(&dev, Produce, Resource::Topic("devices.dev-1.temp")));
        assert!(!acl.allows(&dev, Produce, Resource::Topic("devices.dev-2.temp")));
        assert!(!acl.allows(&dev, Consume, Resource::Topic("devices.dev-1.temp")));
        assert!(!acl.allows(&dev, Produce, Resource::Cluster));
        let reader = who("r", &["readers"]);
        assert!(acl.allows(&reader, Consume, Resource::Topic("orders")));
        assert!(!acl.allows(&reader, Consume, Resource::Topic("orders2")));
        let ops = who("ops", &[]);
        assert!(acl.allows(&ops, Admin, Resource::Cluster));
        assert!(acl.allows(&ops, Admin, Resource::Topic("x")));
        assert!(!acl.allows(&who("nobody", &[]), Describe, Resource::Cluster));
        assert!(!Acl::default().allows(&ops, Admin, Resource::Cluster));
    }
}
