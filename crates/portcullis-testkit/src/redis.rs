//! A real `redis-server` (Debian's package) on a free loopback port, without persistence
//! (`--save '' --appendonly no`), for the rate-limit store's tests; killed on drop. Tests that
//! need it fail loudly when `redis-server` is not installed (`.ci/run` installs it).
//!
//! [`RedisServer::command`] is a minimal RESP client, enough to look at keys (`PTTL`, `KEYS`).
//!
//! Everything here panics on failure: it runs only inside tests, where a panic with the reason is
//! the loud failure wanted (a missing `redis-server` must fail the test, never skip it).
#![allow(clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server gets to answer `PING`.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A Redis reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Status(String),
    /// `-ERR ...`.
    Error(String),
    /// `:42`.
    Int(i64),
    /// `$n` bulk string (`None`: the nil bulk string).
    Bulk(Option<String>),
    /// `*n` array (`None`: the nil array).
    Array(Option<Vec<Reply>>),
}

/// A running `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts one on a free loopback port and waits until it answers `PING`. Panics (the test
    /// fails) when `redis-server` is missing or does not come up.
    pub fn start() -> RedisServer {
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir()
                .join(format!("portcullis-redis-{}-{port}", std::process::id()));
            let mut server = RedisServer {
                child: None,
                port,
                dir,
            };
            // Another process may take the probed port first: then try another.
            if server.spawn_and_wait() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL: no goodbye to clients) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing is persisted). Panics when it cannot.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn_and_wait(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// Runs one command and returns its reply (panics on I/O errors).
    pub fn command(&self, args: &[&str]) -> Reply {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))
            .unwrap_or_else(|e| panic!("redis on port {}: {e}", self.port));
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream
            .write_all(out.as_bytes())
            .unwrap_or_else(|e| panic!("redis write: {e}"));
        read_reply(&mut BufReader::new(stream))
    }

    /// Spawns the server on `self.port`; true once it answers `PING`, false if it exited.
    fn spawn_and_wait(&mut self) -> bool {
        std::fs::create_dir_all(&self.dir).unwrap_or_else(|e| panic!("{e}"));
        let port = self.port.to_string();
        let spawned = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--daemonize", "no", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed: the Redis rate-limit store tests need it \
                 (`apt-get install -y redis-server`; .ci/run installs it)"
            ),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            if ping(self.port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nothing listens on right now (bound on port 0, then released).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("+PONG")
}

fn read_reply(r: &mut impl BufRead) -> Reply {
    let mut line = String::new();
    r.read_line(&mut line)
        .unwrap_or_else(|e| panic!("redis read: {e}"));
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(1.min(line.len()));
    let number = || {
        rest.parse::<i64>()
            .unwrap_or_else(|_| panic!("bad reply {line:?}"))
    };
    match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(number()),
        "$" => {
            let Ok(len) = usize::try_from(number()) else {
                return Reply::Bulk(None);
            };
            let mut buf = vec![0u8; len + 2];
            r.read_exact(&mut buf)
                .unwrap_or_else(|e| panic!("redis read: {e}"));
            buf.truncate(len);
            Reply::Bulk(Some(String::from_utf8_lossy(&buf).into_owned()))
        }
        "*" => {
            let Ok(n) = usize::try_from(number()) else {
                return Reply::Array(None);
            };
            Reply::Array(Some((0..n).map(|_| read_reply(r)).collect()))
        }
        _ => panic!("bad reply {line:?}"),
    }
}
