//! Signing material for minting: a key parsed once (aws-lc-rs) and the token identity it signs for.
//!
//! Exists because jsonwebtoken re-parses the private key on every `encode` (an RSA key parse costs
//! about as much as the signature itself): measured 1,207 µs per RS256 token with
//! `jsonwebtoken::encode` against 662 µs with the key parsed once (docs/loadtest.md). The key comes
//! from the dev token server's `idp.yaml` or from explicit flags. The algorithm list is this crate's
//! own, not portcullis-auth's, so the load tester stays an independent check on the gateway.

use std::path::{Path, PathBuf};

use aws_lc_rs::{hmac, rand::SystemRandom, rsa, signature};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// JOSE algorithms the load tester can sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// Ed25519.
    #[value(name = "EdDSA")]
    EdDSA,
    /// HMAC with SHA-256 (the key file holds the secret).
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
}

impl Alg {
    /// The JOSE `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }

    fn is_hmac(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }
}

/// Why signing material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// idp.yaml is not what the load tester needs.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key file is not a PEM private key of the algorithm's type.
    #[error("{path}: {message}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Flags are missing or contradict each other.
    #[error("{0}")]
    Usage(String),
    /// The crypto library refused to sign.
    #[error("signing failed")]
    Sign,
}

/// A parsed private key (or HMAC secret) bound to one algorithm.
pub enum SigningKey {
    /// RSA (PKCS#1 v1.5 or PSS).
    Rsa(rsa::KeyPair, &'static dyn signature::RsaEncoding),
    /// ECDSA with a fixed-size (JOSE) signature.
    Ecdsa(signature::EcdsaKeyPair),
    /// Ed25519.
    Ed25519(signature::Ed25519KeyPair),
    /// HMAC.
    Hmac(Box<hmac::Key>),
}

impl SigningKey {
    /// Signs `message`, returning the raw signature bytes.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match self {
            SigningKey::Rsa(key, encoding) => {
                let mut out = vec![0; key.public_modulus_len()];
                key.sign(*encoding, &SystemRandom::new(), message, &mut out)
                    .map_err(|_| KeyError::Sign)?;
                Ok(out)
            }
            SigningKey::Ecdsa(key) => key
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Sign),
            SigningKey::Ed25519(key) => Ok(key.sign(message).as_ref().to_vec()),
            SigningKey::Hmac(key) => Ok(hmac::sign(key, message).as_ref().to_vec()),
        }
    }
}

/// Everything needed to mint tokens a gateway should accept.
pub struct Identity {
    /// The signing key.
    pub key: SigningKey,
    /// Its algorithm.
    pub alg: Alg,
    /// `kid` header value (none when empty).
    pub kid: Option<String>,
    /// `iss` claim.
    pub issuer: String,
    /// `aud` claim.
    pub audience: String,
}

/// Where the key and identity come from, as given on the command line.
#[derive(Debug, Default)]
pub struct KeySource {
    /// `-c idp.yaml`.
    pub idp_config: Option<PathBuf>,
    /// `--key FILE`.
    pub key_file: Option<PathBuf>,
    /// `--kid`.
    pub kid: Option<String>,
    /// `--iss`.
    pub issuer: Option<String>,
    /// `--aud`.
    pub audience: Option<String>,
    /// `--alg`.
    pub alg: Option<Alg>,
}

/// Loads the key and identity: idp.yaml first, each flag overriding what it names.
pub fn load(source: &KeySource) -> Result<Identity, KeyError> {
    let from_idp = match &source.idp_config {
        Some(path) => Some(IdpSubset::load(path)?),
        None => None,
    };
    let from_idp = from_idp.as_ref();
    let key_file = source
        .key_file
        .clone()
        .or_else(|| from_idp.map(|c| c.key_file.clone()))
        .ok_or_else(|| KeyError::Usage("give -c idp.yaml or --key FILE".into()))?;
    let issuer = source
        .issuer
        .clone()
        .or_else(|| from_idp.map(|c| c.issuer.clone()))
        .ok_or_else(|| KeyError::Usage("--iss is required without -c idp.yaml".into()))?;
    let audience = source
        .audience
        .clone()
        .or_else(|| from_idp.and_then(|c| c.audience.clone()))
        .ok_or_else(|| KeyError::Usage("--aud is required (idp.yaml has no resource)".into()))?;
    let kid = source
        .kid
        .clone()
        .or_else(|| from_idp.map(|c| c.kid.clone()))
        .filter(|k| !k.is_empty());
    let bytes = std::fs::read(&key_file).map_err(|e| KeyError::Read {
        path: key_file.clone(),
        source: e,
    })?;
    let alg = source.alg.or(from_idp.and_then(|c| c.alg));
    let (key, alg) = parse_key(&bytes, alg).map_err(|message| KeyError::Key {
        path: key_file,
        message,
    })?;
    Ok(Identity {
        key,
        alg,
        kid,
        issuer,
        audience,
    })
}

/// Parses a key file for `alg`; without `alg`, the PEM private key's type picks RS256, ES256,
/// ES384 or EdDSA.
pub fn parse_key(bytes: &[u8], alg: Option<Alg>) -> Result<(SigningKey, Alg), String> {
    if let Some(alg) = alg.filter(|a| a.is_hmac()) {
        let algorithm = match alg {
            Alg::HS384 => hmac::HMAC_SHA384,
            Alg::HS512 => hmac::HMAC_SHA512,
            _ => hmac::HMAC_SHA256,
        };
        return Ok((
            SigningKey::Hmac(Box::new(hmac::Key::new(algorithm, bytes.trim_ascii_end()))),
            alg,
        ));
    }
    let pem = pem::parse(bytes).map_err(|e| format!("not a PEM private key: {e}"))?;
    let der = pem.contents();
    let rsa_key = || match pem.tag() {
        "RSA PRIVATE KEY" => rsa::KeyPair::from_der(der),
        _ => rsa::KeyPair::from_pkcs8(der),
    };
    let ec = |a: &'static signature::EcdsaSigningAlgorithm| {
        signature::EcdsaKeyPair::from_pkcs8(a, der).map(SigningKey::Ecdsa)
    };
    let ed = || signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map(SigningKey::Ed25519);
    let rsa = |enc: &'static dyn signature::RsaEncoding| rsa_key().map(|k| SigningKey::Rsa(k, enc));
    let result = match alg {
        Some(Alg::RS256) => rsa(&signature::RSA_PKCS1_SHA256),
        Some(Alg::RS384) => rsa(&signature::RSA_PKCS1_SHA384),
        Some(Alg::RS512) => rsa(&signature::RSA_PKCS1_SHA512),
        Some(Alg::PS256) => rsa(&signature::RSA_PSS_SHA256),
        Some(Alg::PS384) => rsa(&signature::RSA_PSS_SHA384),
        Some(Alg::PS512) => rsa(&signature::RSA_PSS_SHA512),
        Some(Alg::ES256) => ec(&signature::ECDSA_P256_SHA256_FIXED_SIGNING),
        Some(Alg::ES384) => ec(&signature::ECDSA_P384_SHA384_FIXED_SIGNING),
        Some(Alg::EdDSA) => ed(),
        Some(hmac_alg) => return Err(format!("{} needs a secret", hmac_alg.name())),
        None => return detect(&rsa, &ec, &ed),
    };
    let alg = alg.unwrap_or(Alg::RS256);
    result
        .map(|k| (k, alg))
        .map_err(|e| format!("not a {} private key: {e}", alg.name()))
}

type KeyResult = Result<SigningKey, aws_lc_rs::error::KeyRejected>;

fn detect(
    rsa: &dyn Fn(&'static dyn signature::RsaEncoding) -> KeyResult,
    ec: &dyn Fn(&'static signature::EcdsaSigningAlgorithm) -> KeyResult,
    ed: &dyn Fn() -> KeyResult,
) -> Result<(SigningKey, Alg), String> {
    if let Ok(k) = rsa(&signature::RSA_PKCS1_SHA256) {
        return Ok((k, Alg::RS256));
    }
    if let Ok(k) = ec(&signature::ECDSA_P256_SHA256_FIXED_SIGNING) {
        return Ok((k, Alg::ES256));
    }
    if let Ok(k) = ec(&signature::ECDSA_P384_SHA384_FIXED_SIGNING) {
        return Ok((k, Alg::ES384));
    }
    ed().map(|k| (k, Alg::EdDSA))
        .map_err(|_| "not an RSA, P-256, P-384 or Ed25519 private key (PKCS#8 PEM)".into())
}

/// The few idp.yaml fields the load tester reads (unknown fields ignored).
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawIdp {
    listen: Option<String>,
    issuer: Option<String>,
    #[serde(default)]
    signing_keys: Vec<RawKey>,
    #[serde(default)]
    resources: FirstResource,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawKey {
    id: String,
    alg: Option<Alg>,
    private_key_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawResource {
    audience: Option<String>,
}

/// The first entry of the `resources` map in file order (a map type would sort or lose it).
#[derive(Default)]
struct FirstResource(Option<String>);

impl<'de> Deserialize<'de> for FirstResource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct First;
        impl<'de> Visitor<'de> for First {
            type Value = FirstResource;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of resources")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FirstResource, A::Error> {
                let first = map
                    .next_entry::<String, RawResource>()?
                    .map(|(name, r)| r.audience.unwrap_or(name));
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(FirstResource(first))
            }
        }
        d.deserialize_map(First)
    }
}

struct IdpSubset {
    issuer: String,
    kid: String,
    /// `None`: the key file's type decides, as the dev token server does.
    alg: Option<Alg>,
    key_file: PathBuf,
    audience: Option<String>,
}

impl IdpSubset {
    fn load(path: &Path) -> Result<Self, KeyError> {
        let config_error = |message: String| KeyError::Config {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        let raw: RawIdp = serde_saphyr::from_str(&text).map_err(|e| config_error(e.to_string()))?;
        let key = raw
            .signing_keys
            .into_iter()
            .next()
            .ok_or_else(|| config_error("no signing-keys entry".into()))?;
        let file = key.private_key_file.ok_or_else(|| {
            config_error(format!(
                "signing key {} has no private-key-file (an in-memory key cannot be shared)",
                key.id
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(IdpSubset {
            issuer: issuer(raw.issuer.as_deref(), raw.listen.as_deref()),
            kid: key.id,
            alg: key.alg,
            key_file: base.join(file),
            audience: raw.resources.0,
        })
    }
}

/// The issuer the dev token server announces: `issuer` with `{port}` filled from `listen`, or
/// `http://<listen>/realm` when `issuer` is absent.
fn issuer(configured: Option<&str>, listen: Option<&str>) -> String {
    let listen = listen.unwrap_or("127.0.0.1:8081");
    let port = listen.rsplit(':').next().unwrap_or_default();
    match configured {
        Some(issuer) => issuer.replace("{port}", port),
        None => format!("http://{listen}/realm"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn idp_subset_reads_first_key_and_first_resource_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("idp.yaml");
        std::fs::write(
            &yaml,
            "listen: 127.0.0.1:9000\nissuer: http://127.0.0.1:{port}/realm\nprofile: plain\n\
             signing-keys:\n  - { id: k1, private-key-file: keys/k1.pem }\n  - { id: k2 }\n\
             resources:\n  zz: { audience: api://zz, scopes: [a] }\n  aa: { audience: api://aa }\n\
             clients: []\n",
        )
        .unwrap();
        let s = IdpSubset::load(&yaml).unwrap();
        assert_eq!(s.issuer, "http://127.0.0.1:9000/realm");
        assert_eq!(s.kid, "k1");
        assert_eq!(s.alg, None);
        assert_eq!(s.key_file, dir.path().join("keys/k1.pem"));
        assert_eq!(s.audience.as_deref(), Some("api://zz"));
    }

    #[test]
    fn hmac_secret_drops_trailing_newline() {
        let (a, _) = parse_key(b"secret\n", Some(Alg::HS256)).unwrap();
        let (b, _) = parse_key(b"secret", Some(Alg::HS256)).unwrap();
        assert_eq!(a.sign(b"m").unwrap(), b.sign(b"m").unwrap());
    }

    #[test]
    fn garbage_key_is_an_error_not_a_panic() {
        assert!(parse_key(b"nope", None).is_err());
        assert!(parse_key(b"nope", Some(Alg::ES256)).is_err());
    }
}
