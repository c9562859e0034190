//! A lean HTTP/1.1 keep-alive client: writes pre-serialised request bytes, reads just enough of
//! the response (status line, `Content-Length` or chunked framing, `Connection`) to find its end.
//!
//! Exists because the load driver must keep up with wrk on one core; a general client stack
//! (hyper) spends several times the CPU per request on things a load generator never needs
//! (docs/loadtest.md has the measurement).
//!
//! The same connection runs over plain TCP or TLS ([`Stream`]); HTTP/2 targets use the `h2`
//! crate instead ([`H2Conn`]), one request in flight per connection as for HTTP/1.1, so the two
//! protocols are compared on equal terms.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting failed.
    #[error("connect: {0}")]
    Connect(io::Error),
    /// Reading or writing failed.
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// The server closed the connection before the response ended.
    #[error("connection closed mid-response")]
    Closed,
    /// The response was not HTTP/1.x.
    #[error("bad response: {0}")]
    Parse(&'static str),
}

/// The parts of a response the load driver needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
}

enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Where to connect and how.
#[derive(Clone)]
pub struct Endpoint {
    /// Server address (resolved once).
    pub addr: SocketAddr,
    /// TLS: the client config (ALPN included) and the name to send as SNI and to verify.
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// HTTP/2 (over TLS: ALPN `h2`, required; plain: prior knowledge, h2c).
    pub http2: bool,
}

/// A TCP connection, with or without TLS.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Connects (TCP_NODELAY on) and, for https, completes the TLS handshake; an HTTP/2
    /// endpoint over TLS must negotiate `h2`.
    pub async fn open(endpoint: &Endpoint) -> Result<Stream, ClientError> {
        let tcp = TcpStream::connect(endpoint.addr)
            .await
            .map_err(ClientError::Connect)?;
        tcp.set_nodelay(true).map_err(ClientError::Connect)?;
        let Some((config, name)) = &endpoint.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name.clone(), tcp)
            .await
            .map_err(ClientError::Connect)?;
        if endpoint.http2 && tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(ClientError::Connect(io::Error::other(
                "the server did not negotiate HTTP/2 (ALPN h2)",
            )));
        }
        Ok(Stream::Tls(Box::new(tls)))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An HTTP/2 request without its body, built once per token.
#[derive(Debug, Clone)]
pub struct H2Request {
    /// Method.
    pub method: http::Method,
    /// Absolute URI (`:scheme`, `:authority`, `:path`).
    pub uri: http::Uri,
    /// Headers (the token among them).
    pub headers: http::HeaderMap,
}

/// One HTTP/2 connection; one request at a time on it.
pub struct H2Conn {
    send: h2::client::SendRequest<Bytes>,
}

impl H2Conn {
    /// Connects, handshakes (TLS, then the HTTP/2 preface and settings) and spawns the
    /// connection's driver task on the current runtime.
    pub async fn connect(endpoint: &Endpoint) -> Result<H2Conn, ClientError> {
        let stream = Stream::open(endpoint).await?;
        let (send, connection) = h2::client::handshake(stream)
            .await
            .map_err(|e| ClientError::Connect(io::Error::other(e)))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(H2Conn { send })
    }

    /// Sends `request` (no body) and reads the response to its end.
    pub async fn exchange(&mut self, request: &H2Request) -> Result<Response, ClientError> {
        let mut send = self.send.clone().ready().await.map_err(h2_error)?;
        let mut req = http::Request::new(());
        *req.method_mut() = request.method.clone();
        *req.uri_mut() = request.uri.clone();
        *req.headers_mut() = request.headers.clone();
        let (response, _) = send.send_request(req, true).map_err(h2_error)?;
        let response = response.await.map_err(h2_error)?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(h2_error)?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        self.send = send;
        Ok(Response {
            status,
            keep_alive: true,
        })
    }
}

fn h2_error(e: h2::Error) -> ClientError {
    if e.is_io() {
        match e.into_io() {
            Some(io) => ClientError::Io(io),
            None => ClientError::Closed,
        }
    } else if e.is_go_away() || e.is_reset() {
        ClientError::Closed
    } else {
        ClientError::Parse("HTTP/2 protocol error")
    }
}

/// One keep-alive connection.
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    served: u64,
    got_bytes: bool,
}

impl Conn {
    /// Opens a connection (TCP_NODELAY on; the TLS handshake done for https).
    pub async fn connect(endpoint: &Endpoint) -> Result<Conn, ClientError> {
        let stream = Stream::open(endpoint).await?;
        Ok(Conn {
            stream,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            served: 0,
            got_bytes: false,
        })
    }

    /// Sends `request` and reads the whole response; `head` means no body follows.
    pub async fn exchange(&mut self, request: &[u8], head: bool) -> Result<Response, ClientError> {
        self.got_bytes = false;
        self.stream.write_all(request).await?;
        let (response, framing) = loop {
            let (response, framing) = self.read_head(head).await?;
            if !(100..200).contains(&response.status) {
                break (response, framing);
            }
        };
        let keep_alive = match framing {
            Framing::Empty => response.keep_alive,
            Framing::Length(n) => {
                self.skip(n).await?;
                response.keep_alive
            }
            Framing::Chunked => {
                self.skip_chunked().await?;
                response.keep_alive
            }
            Framing::UntilClose => {
                self.drain_to_eof().await?;
                false
            }
        };
        self.served += 1;
        Ok(Response {
            status: response.status,
            keep_alive,
        })
    }

    /// Whether `err` is the server closing this reused connection before sending a single byte
    /// of the response: its idle close raced our request, so resending on a new connection is
    /// safe and is not an error.
    pub fn idle_close(&self, err: &ClientError) -> bool {
        let reset = |e: &io::Error| {
            matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    // TLS without close_notify
                    | io::ErrorKind::UnexpectedEof
            )
        };
        self.served > 0
            && !self.got_bytes
            && match err {
                ClientError::Closed => true,
                ClientError::Io(e) => reset(e),
                _ => false,
            }
    }

    async fn fill(&mut self) -> Result<(), ClientError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < MAX_HEAD {
                self.buf.resize(self.buf.len() * 2, 0);
            } else {
                return Err(ClientError::Parse("response head too large"));
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        self.end += n;
        self.got_bytes = true;
        Ok(())
    }

    async fn read_head(&mut self, head: bool) -> Result<(Response, Framing), ClientError> {
        loop {
            if self.end > self.start {
                if let Some((len, parsed)) = parse_head(&self.buf[self.start..self.end], head)? {
                    self.start += len;
                    return Ok(parsed);
                }
            }
            self.fill().await?;
        }
    }

    async fn skip(&mut self, mut n: usize) -> Result<(), ClientError> {
        loop {
            let take = n.min(self.end - self.start);
            self.start += take;
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    async fn line(&mut self) -> Result<std::ops::Range<usize>, ClientError> {
        let mut from = self.start;
        loop {
            if let Some(pos) = self.buf[from..self.end]
                .windows(2)
                .position(|w| w == b"\r\n")
            {
                let line = self.start..from + pos;
                self.start = from + pos + 2;
                return Ok(line);
            }
            let scanned = self.end.saturating_sub(1).max(self.start) - self.start;
            self.fill().await?;
            from = self.start + scanned;
        }
    }

    async fn skip_chunked(&mut self) -> Result<(), ClientError> {
        loop {
            let line = self.line().await?;
            let size = chunk_size(&self.buf[line])?;
            if size == 0 {
                while !self.line().await?.is_empty() {}
                return Ok(());
            }
            self.skip(size).await?;
            if !self.line().await?.is_empty() {
                return Err(ClientError::Parse("chunk not followed by CRLF"));
            }
        }
    }

    async fn drain_to_eof(&mut self) -> Result<(), ClientError> {
        self.start = self.end;
        loop {
            match self.fill().await {
                Ok(()) => self.start = self.end,
                Err(ClientError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

fn chunk_size(line: &[u8]) -> Result<usize, ClientError> {
    let hex = line.split(|&b| b == b';').next().unwrap_or_default();
    let hex = std::str::from_utf8(hex).map_err(|_| ClientError::Parse("chunk size"))?;
    usize::from_str_radix(hex.trim(), 16).map_err(|_| ClientError::Parse("chunk size"))
}

/// Parses a response head; `None` when more bytes are needed.
type Head = (usize, (Response, Framing));

fn parse_head(bytes: &[u8], head: bool) -> Result<Option<Head>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ClientError::Parse("malformed status line or header")),
    };
    let status = response.code.unwrap_or(0);
    let mut keep_alive = response.version == Some(1);
    let mut length = None;
    let mut chunked = false;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text =
                std::str::from_utf8(h.value).map_err(|_| ClientError::Parse("content-length"))?;
            length = Some(
                text.trim()
                    .parse::<usize>()
                    .map_err(|_| ClientError::Parse("content-length"))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let framing = if head || status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some((len, (Response { status, keep_alive }, framing))))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn head(bytes: &[u8]) -> (usize, Response, &'static str) {
        let (len, (r, f)) = parse_head(bytes, false).unwrap().unwrap();
        let f = match f {
            Framing::Empty => "empty",
            Framing::Length(_) => "length",
            Framing::Chunked => "chunked",
            Framing::UntilClose => "close",
        };
        (len, r, f)
    }

    #[test]
    fn heads_are_framed_like_rfc_9112_says() {
        let (_, r, f) = head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!((r.status, r.keep_alive, f), (200, true, "length"));
        let (_, r, f) = head(
            b"HTTP/1.1 401 U\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n",
        );
        assert_eq!((r.status, r.keep_alive, f), (401, false, "chunked"));
        let (_, r, f) = head(b"HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!((r.keep_alive, f), (false, "close"));
        let (_, r, f) = head(b"HTTP/1.0 204 OK\r\nConnection: Keep-Alive\r\n\r\n");
        assert_eq!((r.keep_alive, f), (true, "empty"));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", false)
            .unwrap()
            .is_none());
        assert!(parse_head(b"garbage\r\n\r\n", false).is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
    }

    #[test]
    fn chunk_sizes_ignore_extensions() {
        assert_eq!(chunk_size(b"1a;name=v").unwrap(), 26);
        assert!(chunk_size(b"zz").is_err());
    }
}
