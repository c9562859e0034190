//! `portcullis demo`: the dev token server, a recording echo backend and the gateway with the
//! embedded `examples/demo.yaml`, in one process on loopback.
//!
//! Why one process: the demo is the first thing a new user runs; one command must show the whole
//! chain (token -> gateway -> backend with identity headers, and the APIM-style 401) without any
//! other setup. The token server and the backend run on their own runtime threads; the gateway runs
//! on the main thread and owns the signals (SIGINT stops everything at once).
//!
//! The demo's token server key and an `idp.yaml` describing it are written to `--state-dir`, so
//! `portcullis token -c` and `portcullis loadtest -c` can mint tokens the running demo accepts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use portcullis_idp::{IdpConfig, MintRequest};
use portcullis_proxy::RunOptions;
use portcullis_testkit::backend::Backend;

/// The embedded default config (placeholders filled in at start).
const DEMO_YAML: &str = include_str!("../../../examples/demo.yaml");
/// Name the embedded config carries in diagnostics.
const DEMO_YAML_NAME: &str = "examples/demo.yaml";
/// Named values the demo config reads.
const IDP_VAR: &str = "PORTCULLIS_DEMO_IDP";
const BACKEND_VAR: &str = "PORTCULLIS_DEMO_BACKEND";
/// What the demo's printed token carries; examples/demo.yaml's `orders` policy accepts it.
const DEMO_AUDIENCE: &str = "api://default";
const DEMO_SCOPES: &[&str] = &["orders.read"];
const DEMO_ROLES: &[&str] = &["orders-reader"];
const DEMO_TENANT: &str = "tenant-a";

/// `demo` arguments. Port 0 picks a free port; the banner shows what was bound.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Gateway (proxy) listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Gateway admin listener (/metrics, /healthz, /readyz).
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: String,
    /// Dev token server listener.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub idp_listen: String,
    /// Recording echo backend listener.
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub backend_listen: String,
    /// Where the token server's key and an idp.yaml describing it are written.
    #[arg(long, default_value = ".portcullis/demo")]
    pub state_dir: PathBuf,
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
enum DemoError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("dev token server: {0}")]
    Idp(#[from] portcullis_idp::IdpError),
    #[error("echo backend: {0}")]
    Backend(#[from] portcullis_testkit::backend::BackendError),
    #[error("embedded demo config is invalid:\n{0}")]
    Config(String),
    #[error("gateway: {0}")]
    Gateway(#[from] portcullis_proxy::BuildError),
    #[error("invalid listen address {0:?}")]
    Listen(String),
}

/// Runs the demo until Ctrl-C (or SIGTERM).
pub fn run(args: DemoArgs) -> ExitCode {
    match start_and_serve(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis demo: {e}");
            ExitCode::from(1)
        }
    }
}

fn start_and_serve(args: DemoArgs) -> Result<ExitCode, DemoError> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |e| DemoError::Io(what, e)
    };
    std::fs::create_dir_all(&args.state_dir).map_err(io(&args.state_dir))?;

    // Token server: on its own runtime, which must outlive the gateway.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("demo-idp")
        .enable_all()
        .build()
        .map_err(io(Path::new("tokio runtime")))?;
    let mut idp_config = IdpConfig::demo();
    idp_config.listen = Some(
        args.idp_listen
            .parse()
            .map_err(|_| DemoError::Listen(args.idp_listen.clone()))?,
    );
    let key_file = args.state_dir.join("rsa-1.pem");
    idp_config.signing_keys[0].private_key_file = Some(key_file);
    let idp = runtime.block_on(portcullis_idp::start(idp_config))?;
    let idp_base = idp.issuer().to_owned();
    let idp_yaml = args.state_dir.join("idp.yaml");
    std::fs::write(&idp_yaml, idp_yaml_text(&idp)).map_err(io(&idp_yaml))?;

    let backend = Backend::start_on(&args.backend_listen)?;

    // The gateway: the embedded config with the demo's addresses filled in.
    let idp_root = idp_base.trim_end_matches("/realm").to_owned();
    // Named values come from the demo itself, not the environment: setting environment variables
    // while the token server's runtime threads run is unsound, and the user's own values must not
    // leak into the demo.
    let backend_url = backend.url();
    let lookup = |name: &str| match name {
        IDP_VAR => Some(idp_root.clone()),
        BACKEND_VAR => Some(backend_url.clone()),
        _ => None,
    };
    let (mut model, warnings) =
        portcullis_config::load_str_with(DEMO_YAML, Path::new(DEMO_YAML_NAME), &lookup)
            .map_err(|diags| DemoError::Config(render(&diags)))?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    if let Some(first) = model.server.listen.first_mut() {
        first.addr = args.listen.clone();
    }
    model.server.admin = Some(args.admin.clone());
    let gateway = portcullis_proxy::bind(&model, &RunOptions::default())?;
    let addrs = gateway.addresses().clone();
    let gateway_url = addrs
        .proxy
        .first()
        .map(|(a, _)| format!("http://{a}"))
        .unwrap_or_default();
    let admin_url = addrs
        .admin
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();

    let mut req = MintRequest::new("alice", DEMO_AUDIENCE);
    req.scopes = DEMO_SCOPES.iter().map(|s| (*s).to_owned()).collect();
    req.roles = DEMO_ROLES.iter().map(|s| (*s).to_owned()).collect();
    req.ttl = Duration::from_secs(3600);
    req.claims
        .insert("tid".into(), serde_json::Value::from(DEMO_TENANT));
    let token = idp.mint(&req)?;

    portcullis_proxy::announce(&addrs);
    let text = banner(&Banner {
        gateway: &gateway_url,
        admin: &admin_url,
        idp: &idp_base,
        backend: &backend.url(),
        token: &token,
        idp_yaml: &idp_yaml,
    });
    // Write errors ignored: a reader that stops early (`| head`) must not stop the demo
    // (`println!` panics on a closed pipe).
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    let code = gateway.run();
    runtime.block_on(idp.shutdown());
    drop(backend);
    Ok(code)
}

fn render(diags: &[portcullis_config::Diagnostic]) -> String {
    diags.iter().fold(String::new(), |mut s, d| {
        let _ = writeln!(s, "{d}");
        s
    })
}

/// An idp.yaml for the running demo token server (same key, issuer and resource), so
/// `portcullis token -c` and `portcullis loadtest -c` mint tokens the demo gateway accepts.
fn idp_yaml_text(idp: &portcullis_idp::IdpHandle) -> String {
    let listen = idp.http_addr().map(|a| a.to_string()).unwrap_or_default();
    format!(
        "# Written by `portcullis demo`: its token server's settings. Use with\n\
         # `portcullis token -c` or `portcullis loadtest -c` while the demo runs.\n\
         listen: \"{listen}\"\n\
         issuer: \"{issuer}\"\n\
         signing-keys:\n  - {{ id: rsa-1, alg: RS256, private-key-file: rsa-1.pem }}\n\
         resources:\n  \"{aud}\": {{ audience: \"{aud}\", scopes: [orders.read, orders.write] }}\n\
         clients:\n  - {{ client-id: dev-client, client-secret: dev-secret, auth-method: client_secret_basic,\n\
         \x20     grant-types: [client_credentials, password, refresh_token], default-resource: \"{aud}\" }}\n\
         users:\n  - {{ username: alice, password: alice, roles: [orders-reader] }}\n",
        issuer = idp.issuer(),
        aud = DEMO_AUDIENCE,
    )
}

struct Banner<'a> {
    gateway: &'a str,
    admin: &'a str,
    idp: &'a str,
    backend: &'a str,
    token: &'a str,
    idp_yaml: &'a Path,
}

fn banner(b: &Banner<'_>) -> String {
    let scopes = DEMO_SCOPES.join(",");
    let roles = DEMO_ROLES.join(",");
    format!(
        "\n\
Portcullis demo is running (Ctrl-C stops it).\n\
  gateway       {gw}   config: {cfg} (embedded)\n\
  admin         {admin}   /metrics /healthz /readyz\n\
  token server  {idp}   discovery: {idp}/.well-known/openid-configuration\n\
  echo backend  {backend}\n\
\n\
A token for alice (aud {aud}, scope {scopes}, roles {roles}, valid 1 h):\n\
  TOKEN={token}\n\
\n\
200: the backend echoes the request, with the identity headers the gateway added:\n\
  curl -s -H \"Authorization: Bearer $TOKEN\" {gw}/api/orders\n\
401 with APIM's JSON body (no token), and the backend never sees it:\n\
  curl -si {gw}/api/orders\n\
\n\
More tokens from the token server (client credentials):\n\
  curl -s -u dev-client:dev-secret -d grant_type=client_credentials -d scope={aud}/.default {idp}/token\n\
Load with valid and invalid tokens, correctness checked:\n\
  portcullis loadtest --url {gw}/api/orders -c {yaml} --scope {scope_sp} --roles {roles} --claim tid={tid} --duration 10s\n",
        gw = b.gateway,
        cfg = DEMO_YAML_NAME,
        admin = b.admin,
        idp = b.idp,
        backend = b.backend,
        aud = DEMO_AUDIENCE,
        token = b.token,
        yaml = b.idp_yaml.display(),
        scope_sp = scopes,
        tid = DEMO_TENANT,
    )
}
