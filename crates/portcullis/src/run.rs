//! `portcullis run`: a gateway config file (`-c FILE`, handled by `portcullis-proxy`), or a whole
//! APIM service exported by the APIOps extractor (`--apiops DIR`), imported in memory and run with
//! no intermediate file: the one command a user replacing APIM on a laptop types.
//!
//! Why here: the importer (`portcullis-apim`) and the gateway (`portcullis-proxy`) do not know each
//! other; the binary is where they meet. The folder is imported exactly as `import-apim --apiops`
//! would write it (the report goes to stderr), then loaded with the same flags as a file
//! (`--map-upstream` at load, `--listen`, `--admin`, the subscription keys). `{{named values}}` come
//! from the environment first, then from the folder's own non-secret named values; secret ones
//! must be given in the environment. A folder import is not reloaded: edit and restart, or write
//! it with `import-apim --apiops DIR -o gateway.yaml` and `run -c` that (which reloads).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `portcullis run` arguments: the gateway's, plus `--apiops`.
#[derive(Debug, clap::Args)]
pub struct RunCommand {
    /// An APIOps extractor folder (APIs, operations, products, subscriptions, named values,
    /// backends, policy fragments, version sets): imported in memory and run, instead of `-c`.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    apiops: Option<PathBuf>,
    #[command(flatten)]
    args: portcullis_proxy::RunArgs,
}

/// Runs the command; returns the process exit code.
pub fn run(cmd: RunCommand) -> ExitCode {
    match &cmd.apiops {
        Some(dir) => run_apiops(dir, &cmd.args),
        None => portcullis_proxy::run(cmd.args),
    }
}

fn run_apiops(dir: &Path, args: &portcullis_proxy::RunArgs) -> ExitCode {
    // Origins are mapped once, by the loader, as for `run -c` (the importer writes the folder's).
    let import =
        match portcullis_apim::apiops::import(dir, &portcullis_apim::apiops::Options::default()) {
            Ok(import) => import,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(portcullis_proxy::EXIT_INVALID_CONFIG);
            }
        };
    eprint!("{}", import.report);
    // The environment wins (under the name or its upper-case form), then the folder's value.
    let lookup = |name: &str| {
        use portcullis_config::vars::{env_name, from_env};
        from_env(name)
            .or_else(|| from_env(&env_name(name)))
            .or_else(|| import.named_value(name).map(str::to_owned))
    };
    // Diagnostics of the imported YAML name this (unwritten) file; `import-apim --apiops DIR -o F`
    // writes it for a look.
    let name = dir.join("gateway.yaml (imported by run --apiops)");
    let loaded =
        portcullis_config::load_str_opts(&import.yaml, &name, &lookup, &args.load_options());
    if loaded.is_err() {
        eprintln!(
            "the imported config is invalid: `portcullis import-apim --apiops {} -o gateway.yaml` writes it for a look",
            dir.display()
        );
    }
    portcullis_proxy::run_loaded(args, loaded, None)
}
