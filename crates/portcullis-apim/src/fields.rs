//! The keys of one converted policy block, collected in any order and written in gateway.yaml's
//! documented order (so the output reads like the contract, whatever order the XML used).

use std::collections::BTreeMap;

use crate::yaml::{Entry, Item, Node};

/// gateway.yaml's order for the keys of `validate-jwt` and `validate-azure-ad-token`.
const ORDER: &[&str] = &[
    "tenant-id",
    "header-name",
    "query-parameter-name",
    "require-scheme",
    "failed-validation-httpcode",
    "failed-validation-error-message",
    "require-expiration-time",
    "require-signed-tokens",
    "clock-skew",
    "openid-config",
    "issuer-signing-keys",
    "decryption-keys",
    "client-application-ids",
    "backend-application-ids",
    "audiences",
    "issuers",
    "required-claims",
];

/// Keys collected for one policy block.
#[derive(Debug, Default)]
pub struct Fields {
    slots: BTreeMap<usize, Entry>,
}

impl Fields {
    fn rank(key: &str) -> usize {
        ORDER.iter().position(|k| *k == key).unwrap_or(ORDER.len())
    }

    /// Set a scalar key (a later value replaces an earlier one).
    pub fn set(&mut self, key: &str, value: Node) {
        self.slots.insert(Self::rank(key), Entry::new(key, value));
    }

    /// Set a key to `entry` (its comments kept), replacing an earlier one.
    pub fn set_entry(&mut self, entry: Entry) {
        self.slots.insert(Self::rank(&entry.key), entry);
    }

    /// The entry of a key, when set.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.slots.get(&Self::rank(key))
    }

    /// Whether a key is set.
    pub fn has(&self, key: &str) -> bool {
        self.slots.contains_key(&Self::rank(key))
    }

    /// Append to a list key, creating it (with `comment` before it) when absent.
    pub fn push(&mut self, key: &str, item: Item, comment: &str) {
        let entry = self
            .slots
            .entry(Self::rank(key))
            .or_insert_with(|| Entry::new(key, Node::Seq(Vec::new())).comment(comment));
        if let Node::Seq(items) = &mut entry.value {
            items.push(item);
        }
    }

    /// The entries in gateway.yaml order.
    pub fn entries(&self) -> Vec<Entry> {
        self.slots.values().cloned().collect()
    }
}
