//! Integration tests: the real load driver against real HTTP servers on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod load;
mod server;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use clap::Parser;
use jsonwebtoken::{Algorithm, DecodingKey};
use portcullis_loadtest::LoadtestArgs;

pub const ISSUER: &str = "http://127.0.0.1:8081/realm";
pub const AUDIENCE: &str = "api://orders";
pub const KID: &str = "rsa-test";

/// The command line as a user types it.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: LoadtestArgs,
}

pub fn args(argv: &[&str]) -> LoadtestArgs {
    let argv = std::iter::once("loadtest").chain(argv.iter().copied());
    Cli::try_parse_from(argv).unwrap().args
}

/// (private PKCS#8 PEM, public SPKI PEM), generated once per test run.
fn rsa_pems() -> &'static (String, String) {
    static PEMS: OnceLock<(String, String)> = OnceLock::new();
    PEMS.get_or_init(|| {
        let key = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let private: Pkcs8V1Der = key.as_der().unwrap();
        let public: PublicKeyX509Der = key.public_key().as_der().unwrap();
        (
            pem::encode(&pem::Pem::new("PRIVATE KEY", private.as_ref().to_vec())),
            pem::encode(&pem::Pem::new("PUBLIC KEY", public.as_ref().to_vec())),
        )
    })
}

/// A temp dir with the key and an idp.yaml naming it, plus the oracle that checks its tokens.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub key: PathBuf,
    pub idp_yaml: PathBuf,
    pub oracle: Arc<server::Oracle>,
}

pub fn fixture() -> Fixture {
    let (private, public) = rsa_pems();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let key = dir.path().join("keys/signer.pem");
    std::fs::write(&key, private).unwrap();
    let idp_yaml = dir.path().join("idp.yaml");
    std::fs::write(
        &idp_yaml,
        format!(
            "listen: 127.0.0.1:8081\nissuer: http://127.0.0.1:{{port}}/realm\n\
             signing-keys:\n  - {{ id: {KID}, private-key-file: keys/signer.pem }}\n\
             resources:\n  orders: {{ audience: \"{AUDIENCE}\", scopes: [orders.read] }}\n\
             clients: []\n"
        ),
    )
    .unwrap();
    let oracle = Arc::new(server::Oracle {
        key: DecodingKey::from_rsa_pem(public.as_bytes()).unwrap(),
        alg: Algorithm::RS256,
        kid: KID.into(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
    });
    Fixture {
        _dir: dir,
        key,
        idp_yaml,
        oracle,
    }
}

/// A runtime for the servers, on its own thread (the load driver runs its own threads).
pub fn server_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}
