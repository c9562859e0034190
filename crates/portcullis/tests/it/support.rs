//! Shared pieces of the end-to-end tests: the gateway binary as a child process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `portcullis run -c FILE` as a child process, ready (keys loaded) when returned.
pub struct Gateway {
    child: Child,
    /// The first proxy listener's URL (`proxy=` lists them comma-separated, in config order).
    pub proxy: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Writes `text` (a gateway.yaml) and runs it; its logs are discarded.
    pub async fn run(text: &str, client: &reqwest::Client) -> Gateway {
        Self::run_with(text, client, &[], &[], Stdio::null()).await
    }

    /// As [`Gateway::run`], with extra arguments before `run` (`--log-format json`), extra
    /// environment variables (`RUST_LOG`) and the child's stderr (its logs) sent to `stderr`.
    pub async fn run_with(
        text: &str,
        client: &reqwest::Client,
        global_args: &[&str],
        envs: &[(&str, &str)],
        stderr: Stdio,
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gateway.yaml");
        std::fs::write(&config, text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(global_args)
            .args(["run", "-c"])
            .arg(&config)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {line:?} (config:\n{text})"))
                .to_owned()
        };
        let proxy = field("proxy=")
            .split(',')
            .next()
            .unwrap_or_default()
            .to_owned();
        let admin = field("admin=");
        let admin_client = reqwest::Client::new();
        let mut ready = false;
        for _ in 0..1000 {
            if let Ok(r) = admin_client.get(format!("{admin}/readyz")).send().await {
                if r.status() == 200 {
                    ready = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(ready, "gateway never became ready (keys not loaded?)");
        Gateway {
            child,
            proxy,
            client: client.clone(),
            _dir: dir,
        }
    }

    /// GET `path` with a bearer token: status and body.
    pub async fn call(&self, path: &str, token: &str) -> (u16, String) {
        let resp = self
            .client
            .get(format!("{}{path}", self.proxy))
            .bearer_auth(token)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

impl Gateway {
    /// Stops it with SIGTERM and waits: its logs are complete afterwards.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
