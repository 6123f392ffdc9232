//! Which quota applies to a (user, client id): Kafka's `DefaultQuotaCallback`. The most
//! specific entity that sets the kind's key wins, in this order:
//! 1. user and client id, 2. user and the default client id, 3. user,
//! 4. the default user and client id, 5. the default user and default client id,
//! 6. the default user, 7. client id, 8. the default client id.
//!
//! Clients share a rate when they resolve to the same entity with the same names: the
//! [`BucketKey`] keeps the user when the entity has a user part and the client id when it
//! has a client-id part (a default part shares nothing: each user, or each client id,
//! gets its own rate at the default quota).

use std::collections::HashMap;

use crate::controller::client_quotas::{
    CONSUMER_BYTE_RATE, CONTROLLER_MUTATION_RATE, ClientQuotas, PRODUCER_BYTE_RATE, QuotaEntity,
    QuotaName, REQUEST_PERCENTAGE,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// `producer_byte_rate`: bytes of the record sets a client produces.
    Produce = 0,
    /// `consumer_byte_rate`: bytes of the fetch responses a consumer is sent.
    Fetch = 1,
    /// `request_percentage`: request handling time, 100 per second being one thread.
    Request = 2,
    /// `controller_mutation_rate` (KIP-599): partitions created, added or deleted per
    /// second, measured by a token bucket rather than a windowed rate.
    ControllerMutation = 3,
}

impl QuotaKind {
    pub const COUNT: usize = 4;
    pub const ALL: [QuotaKind; QuotaKind::COUNT] = [
        QuotaKind::Produce,
        QuotaKind::Fetch,
        QuotaKind::Request,
        QuotaKind::ControllerMutation,
    ];

    pub fn key(self) -> &'static str {
        match self {
            QuotaKind::Produce => PRODUCER_BYTE_RATE,
            QuotaKind::Fetch => CONSUMER_BYTE_RATE,
            QuotaKind::Request => REQUEST_PERCENTAGE,
            QuotaKind::ControllerMutation => CONTROLLER_MUTATION_RATE,
        }
    }
}

/// (user, client id) of the entity a client resolved to, with the client's own names.
pub type BucketKey = (Option<String>, Option<String>);

#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub quota: f64,
    pub bucket: BucketKey,
}

/// The user and client-id quotas of the image, by kind.
#[derive(Debug, Default)]
pub struct QuotaTable {
    by_kind: [HashMap<QuotaEntity, f64>; QuotaKind::COUNT],
}

impl QuotaTable {
    pub fn from_image(quotas: &ClientQuotas) -> QuotaTable {
        let mut table = QuotaTable::default();
        for (entity, values) in quotas {
            if entity.ip.is_some() {
                continue;
            }
            for kind in QuotaKind::ALL {
                if let Some(value) = values.get(kind.key()) {
                    table.by_kind[kind as usize].insert(entity.clone(), *value);
                }
            }
        }
        table
    }

    pub fn has(&self, kind: QuotaKind) -> bool {
        !self.by_kind[kind as usize].is_empty()
    }

    pub fn resolve(&self, kind: QuotaKind, user: &str, client_id: &str) -> Option<Resolved> {
        let quotas = &self.by_kind[kind as usize];
        if quotas.is_empty() {
            return None;
        }
        let named = |name: &str| Some(QuotaName::Named(name.to_string()));
        let default = || Some(QuotaName::Default);
        let order = [
            (named(user), named(client_id)),
            (named(user), default()),
            (named(user), None),
            (default(), named(client_id)),
            (default(), default()),
            (default(), None),
            (None, named(client_id)),
            (None, default()),
        ];
        order.into_iter().find_map(|(user_part, client_part)| {
            let has_user = user_part.is_some();
            let has_client = client_part.is_some();
            let entity = QuotaEntity {
                user: user_part,
                client_id: client_part,
                ip: None,
            };
            quotas.get(&entity).map(|quota| Resolved {
                quota: *quota,
                bucket: (
                    has_user.then(|| user.to_string()),
                    has_client.then(|| client_id.to_string()),
                ),
            })
        })
    }
}
