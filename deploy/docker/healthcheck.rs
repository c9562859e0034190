//! The container HEALTHCHECK probe: `GET` one `http://IP:PORT/path` URL and exit 0 only on a 2xx
//! answer (1 otherwise, as Docker expects).
//!
//! Why it exists: the runtime image is distroless (no shell, no curl, no wget), and `portcullis`
//! has no `healthcheck` subcommand. This single file builds with plain `rustc` and only `std`, so
//! it needs no Cargo manifest, no workspace membership and no extra crate in the image's build.
//! It speaks just enough HTTP/1.1 for the gateway's admin `/healthz`: an IP literal (no DNS), no
//! TLS, the status line only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// The admin listener's liveness endpoint in the image's default config.
const DEFAULT_URL: &str = "http://127.0.0.1:9901/healthz";
/// Connect, write and read bound; Docker's own `--timeout` is the outer one.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// A status line longer than this is not an HTTP/1.x answer from our admin listener.
const MAX_STATUS_LINE: usize = 256;

fn main() -> ExitCode {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    match probe(&url) {
        Ok(status) if (200..300).contains(&status) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("healthcheck: {url} answered {status}");
            ExitCode::FAILURE
        }
        Err(message) => {
            eprintln!("healthcheck: {url}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Sends the request and returns the answer's status code.
fn probe(url: &str) -> Result<u16, String> {
    let (addr, path) = split_url(url)?;
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    parse_status(&read_status_line(&mut stream)?)
}

/// `http://IP:PORT/path` -> (socket address, path); the path defaults to `/`.
fn split_url(url: &str) -> Result<(SocketAddr, &str), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    let addr = authority
        .parse()
        .map_err(|_| format!("{authority:?} is not IP:PORT"))?;
    Ok((addr, path))
}

/// Reads up to the end of the first line.
fn read_status_line(stream: &mut TcpStream) -> Result<String, String> {
    let mut line = Vec::with_capacity(64);
    let mut chunk = [0u8; 64];
    while !line.contains(&b'\n') {
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        line.extend_from_slice(&chunk[..n]);
        if line.len() > MAX_STATUS_LINE {
            return Err("status line too long".to_owned());
        }
    }
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    Ok(String::from_utf8_lossy(&line[..end]).into_owned())
}

/// `HTTP/1.1 200 OK` -> 200.
fn parse_status(line: &str) -> Result<u16, String> {
    let mut parts = line.split_ascii_whitespace();
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(version), Some(Ok(status))) if version.starts_with("HTTP/1.") => Ok(status),
        _ => Err(format!(
            "not an HTTP/1.x status line: {:?}",
            line.trim_end()
        )),
    }
}
