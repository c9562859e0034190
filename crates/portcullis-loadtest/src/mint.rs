//! Minting the request set: distinct valid tokens and a mix of invalid kinds, signed in parallel.
//!
//! A load test that only sends valid tokens cannot tell a gateway that validates from one that
//! forwards everything; each invalid kind here is one way a token must be refused.

use std::sync::atomic::{AtomicBool, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::keys::{Identity, KeyError};

/// What a token is, and so what the gateway must answer. Declared in report order; invalid
/// tokens are dealt out round robin in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Signed, in date, right issuer and audience: must be accepted (2xx).
    Valid,
    /// `exp` an hour ago.
    Expired,
    /// A signature byte flipped.
    BadSignature,
    /// `aud` not the configured audience.
    WrongAudience,
    /// `kid` the gateway has never seen.
    UnknownKid,
    /// `alg: none`, empty signature.
    AlgNone,
    /// No token in the request.
    Missing,
    /// `iss` not the configured issuer.
    WrongIssuer,
    /// `nbf` an hour ahead.
    NotYetValid,
    /// Not a JWT at all.
    Malformed,
}

impl Kind {
    /// Every kind, valid first, in declaration order (so `ALL[k.index()] == k`).
    pub const ALL: [Kind; 10] = [
        Kind::Valid,
        Kind::Expired,
        Kind::BadSignature,
        Kind::WrongAudience,
        Kind::UnknownKid,
        Kind::AlgNone,
        Kind::Missing,
        Kind::WrongIssuer,
        Kind::NotYetValid,
        Kind::Malformed,
    ];

    /// Every invalid kind.
    pub const INVALID: &'static [Kind] = Kind::ALL.split_at(1).1;

    /// Stable name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Valid => "valid",
            Kind::Expired => "expired",
            Kind::NotYetValid => "not-yet-valid",
            Kind::BadSignature => "bad-signature",
            Kind::WrongAudience => "wrong-audience",
            Kind::WrongIssuer => "wrong-issuer",
            Kind::UnknownKid => "unknown-kid",
            Kind::AlgNone => "alg-none",
            Kind::Malformed => "malformed",
            Kind::Missing => "missing",
        }
    }

    /// Index into per-kind counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether `status` is the answer this kind must get: 2xx for valid, 401/403 for the rest.
    pub fn expects(self, status: u16) -> bool {
        match self {
            Kind::Valid => (200..300).contains(&status),
            _ => status == 401 || status == 403,
        }
    }
}

/// One minted token (`None` for [`Kind::Missing`]).
pub struct Minted {
    /// What it is.
    pub kind: Kind,
    /// The compact JWT.
    pub token: Option<String>,
}

/// Extra claims every token carries.
#[derive(Debug, Default, Clone)]
pub struct ExtraClaims {
    /// `scope` (space-separated string).
    pub scope: Option<String>,
    /// `roles` (array).
    pub roles: Vec<String>,
    /// Further `k=v` claims; `v` is parsed as JSON when it parses, else kept as a string.
    pub claims: Vec<(String, Value)>,
}

/// The plan: how many of each.
pub struct Plan {
    /// Valid tokens.
    pub valid: usize,
    /// Invalid tokens (dealt round robin over `invalid_kinds`).
    pub invalid: usize,
    /// The invalid kinds this run can produce, in report order.
    pub invalid_kinds: Vec<Kind>,
}

impl Plan {
    /// `valid` valid tokens plus enough invalid ones (of every kind) that they make `percent` of
    /// the set.
    pub fn new(valid: usize, percent: f64) -> Self {
        Plan::with_kinds(valid, percent, Kind::INVALID.to_vec())
    }

    /// As [`Plan::new`], dealing the invalid tokens over `invalid_kinds` only (none: no invalid
    /// tokens).
    pub fn with_kinds(valid: usize, percent: f64, invalid_kinds: Vec<Kind>) -> Self {
        let invalid = if percent <= 0.0 || invalid_kinds.is_empty() {
            0
        } else {
            (valid as f64 * percent / (100.0 - percent)).round() as usize
        };
        Plan {
            valid,
            invalid,
            invalid_kinds,
        }
    }

    /// Whether this plan sends tokens of `kind`.
    pub fn produces(&self, kind: Kind) -> bool {
        kind == Kind::Valid || self.invalid_kinds.contains(&kind)
    }

    /// Total tokens.
    pub fn total(&self) -> usize {
        self.valid + self.invalid
    }

    /// The kind of token number `i`: valid first, then the invalid kinds round robin.
    pub fn kind(&self, i: usize) -> Kind {
        if i < self.valid {
            Kind::Valid
        } else {
            self.invalid_kinds[(i - self.valid) % self.invalid_kinds.len()]
        }
    }
}

/// Signs the whole plan on `threads` threads; `tick` is called once per token (progress).
/// `now` is the wall clock in Unix seconds; valid tokens live for `lifetime` seconds.
pub fn mint_all(
    identity: &Identity,
    extra: &ExtraClaims,
    plan: &Plan,
    now: u64,
    lifetime: u64,
    threads: usize,
    tick: &(dyn Fn() + Sync),
) -> Result<Vec<Minted>, KeyError> {
    let total = plan.total();
    let threads = threads.clamp(1, total.max(1));
    let chunk = total.div_ceil(threads).max(1);
    let run_id: u32 = rand::random();
    let failed = AtomicBool::new(false);
    let minter = Minter {
        identity,
        extra,
        now,
        lifetime,
        run_id,
    };
    let parts: Vec<Result<Vec<Minted>, KeyError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..total)
            .step_by(chunk)
            .map(|start| {
                let (minter, failed) = (&minter, &failed);
                s.spawn(move || {
                    (start..(start + chunk).min(total))
                        .map(|i| {
                            if failed.load(Ordering::Relaxed) {
                                return Err(KeyError::Sign);
                            }
                            let minted = minter.mint(i, plan.kind(i));
                            failed.fetch_or(minted.is_err(), Ordering::Relaxed);
                            tick();
                            minted
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(KeyError::Sign)))
            .collect()
    });
    let mut all = Vec::with_capacity(total);
    for part in parts {
        all.extend(part?);
    }
    Ok(all)
}

struct Minter<'a> {
    identity: &'a Identity,
    extra: &'a ExtraClaims,
    now: u64,
    lifetime: u64,
    run_id: u32,
}

const HOUR: u64 = 3600;

impl Minter<'_> {
    fn mint(&self, i: usize, kind: Kind) -> Result<Minted, KeyError> {
        let token = match kind {
            Kind::Missing => None,
            Kind::Malformed => Some(format!("not-a-jwt.{i}")),
            _ => Some(self.jwt(i, kind)?),
        };
        Ok(Minted { kind, token })
    }

    fn jwt(&self, i: usize, kind: Kind) -> Result<String, KeyError> {
        let id = self.identity;
        let mut header = Map::new();
        let alg = if kind == Kind::AlgNone {
            "none"
        } else {
            id.alg.name()
        };
        header.insert("alg".into(), alg.into());
        header.insert("typ".into(), "JWT".into());
        match (kind, &id.kid) {
            (Kind::UnknownKid, Some(kid)) => header.insert(
                "kid".into(),
                format!("{kid}-unknown-{}", self.run_id).into(),
            ),
            (Kind::UnknownKid, None) => {
                header.insert("kid".into(), format!("unknown-{}", self.run_id).into())
            }
            (_, Some(kid)) => header.insert("kid".into(), kid.as_str().into()),
            (_, None) => None,
        };
        let signing_input = format!(
            "{}.{}",
            b64_json(&Value::Object(header)),
            b64_json(&self.claims(i, kind))
        );
        if kind == Kind::AlgNone {
            return Ok(format!("{signing_input}."));
        }
        let mut signature = id.key.sign(signing_input.as_bytes())?;
        if kind == Kind::BadSignature {
            if let Some(b) = signature.first_mut() {
                *b ^= 0x01;
            }
        }
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    fn claims(&self, i: usize, kind: Kind) -> Value {
        let id = self.identity;
        let (iat, nbf, exp) = match kind {
            Kind::Expired => (self.now - 2 * HOUR, self.now - 2 * HOUR, self.now - HOUR),
            Kind::NotYetValid => (self.now, self.now + HOUR, self.now + 2 * HOUR),
            _ => (self.now, self.now, self.now + self.lifetime),
        };
        let issuer = match kind {
            Kind::WrongIssuer => format!("{}/not-this-issuer", id.issuer),
            _ => id.issuer.clone(),
        };
        let audience = match kind {
            Kind::WrongAudience => format!("{}/not-this-audience", id.audience),
            _ => id.audience.clone(),
        };
        let mut claims = json!({
            "iss": issuer,
            "aud": audience,
            "sub": format!("loadtest-user-{i}"),
            "jti": format!("lt-{:08x}-{i}", self.run_id),
            "iat": iat,
            "nbf": nbf,
            "exp": exp,
        });
        if let Value::Object(map) = &mut claims {
            if let Some(scope) = &self.extra.scope {
                map.insert("scope".into(), scope.as_str().into());
            }
            if !self.extra.roles.is_empty() {
                map.insert("roles".into(), self.extra.roles.clone().into());
            }
            for (k, v) in &self.extra.claims {
                map.insert(k.clone(), v.clone());
            }
        }
        claims
    }
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::keys::{parse_key, Alg};

    #[test]
    fn plan_makes_invalid_the_given_share() {
        let plan = Plan::new(9000, 10.0);
        assert_eq!(plan.invalid, 1000);
        assert_eq!(plan.kind(0), Kind::Valid);
        assert_eq!(plan.kind(9000), Kind::INVALID[0]);
        assert_eq!(plan.kind(9001), Kind::INVALID[1]);
        assert_eq!(Plan::new(5, 0.0).invalid, 0);
    }

    #[test]
    fn every_token_is_distinct_and_alg_none_has_no_signature() {
        let (key, alg) = parse_key(b"k", Some(Alg::HS256)).unwrap();
        let identity = Identity {
            key,
            alg,
            kid: Some("k1".into()),
            issuer: "iss".into(),
            audience: "aud".into(),
        };
        let plan = Plan::new(50, 50.0);
        let minted = mint_all(
            &identity,
            &ExtraClaims::default(),
            &plan,
            1_000_000,
            60,
            2,
            &|| {},
        )
        .unwrap();
        assert_eq!(minted.len(), 100);
        let tokens: std::collections::HashSet<_> =
            minted.iter().filter_map(|m| m.token.clone()).collect();
        let missing = minted.iter().filter(|m| m.kind == Kind::Missing).count();
        assert_eq!(tokens.len(), 100 - missing);
        let none = minted.iter().find(|m| m.kind == Kind::AlgNone).unwrap();
        assert!(none.token.as_ref().unwrap().ends_with('.'));
    }
}
