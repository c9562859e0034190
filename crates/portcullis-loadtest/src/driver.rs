//! The load loop: one current-thread tokio runtime per OS thread (as wrk runs one event loop per
//! thread), each driving its share of keep-alive connections, closed-loop or on a fixed schedule.
//!
//! Open-loop latency is measured from the intended send time, so a stalled server shows up as
//! latency instead of silently lowering the request rate (coordinated omission).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::client::{ClientError, Conn, Endpoint, H2Conn, H2Request, Response};
use crate::mint::Kind;
use crate::stats::{micros, Stats, Timeline};

/// The requests, one per token, and what each must get.
pub struct Requests {
    /// The requests as sent.
    pub wire: Wire,
    /// The kind of token each request carries.
    pub kinds: Vec<Kind>,
    /// Whether the method is HEAD (no response body).
    pub head: bool,
}

/// The requests in their protocol's form.
pub enum Wire {
    /// Complete HTTP/1.1 request bytes.
    Http1(Vec<Box<[u8]>>),
    /// HTTP/2 request heads.
    Http2(Vec<H2Request>),
}

/// The request set a run sends, replaceable while it runs (tokens fetched from a token
/// endpoint are refreshed before they expire). Connections check `version`, a read of a cache
/// line that is only written on a refresh, and reload the set only when it moved, so the
/// request path stays free of shared reference counting.
pub struct RequestSet {
    current: ArcSwap<Requests>,
    version: AtomicU64,
}

impl RequestSet {
    /// A set serving `requests`.
    pub fn new(requests: Requests) -> RequestSet {
        RequestSet {
            current: ArcSwap::from_pointee(requests),
            version: AtomicU64::new(0),
        }
    }

    /// Replace the requests (same slots and kinds, new tokens); connections pick it up at their
    /// next request.
    pub fn replace(&self, requests: Requests) {
        self.current.store(Arc::new(requests));
        self.version.fetch_add(1, Ordering::Release);
    }

    fn load(&self) -> (u64, Arc<Requests>) {
        let version = self.version.load(Ordering::Acquire);
        (version, self.current.load_full())
    }
}

/// How to drive.
#[derive(Clone)]
pub struct Load {
    /// Where and how to connect.
    pub endpoint: Endpoint,
    /// Concurrent connections.
    pub connections: usize,
    /// OS threads, each with its own runtime.
    pub threads: usize,
    /// Run length.
    pub duration: Duration,
    /// Total requests per second (open loop), or closed loop when `None`.
    pub rate: Option<f64>,
    /// A request unanswered this long at the end counts as a timeout.
    pub timeout: Duration,
}

/// Live counters per thread (padded so threads do not share a cache line).
#[repr(align(128))]
#[derive(Default)]
pub struct Counter {
    responses: AtomicU64,
    errors: AtomicU64,
}

/// Counters the progress display reads while the run goes on.
pub struct Live {
    counters: Vec<Counter>,
}

impl Live {
    /// (responses, transport errors) so far.
    pub fn totals(&self) -> (u64, u64) {
        self.counters.iter().fold((0, 0), |(r, e), c| {
            (
                r + c.responses.load(Ordering::Relaxed),
                e + c.errors.load(Ordering::Relaxed),
            )
        })
    }
}

/// Why the run could not be driven.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// A runtime or thread could not be created.
    #[error("cannot start load threads: {0}")]
    Start(String),
}

struct Shared {
    load: Load,
    requests: Arc<RequestSet>,
    template: Stats,
    live: Arc<Live>,
}

/// Runs the load; `tick(elapsed, live)` is called about every 100 ms from this thread.
/// Returns the merged counters and the measured run time.
pub fn drive(
    load: &Load,
    requests: Arc<RequestSet>,
    tick: &mut dyn FnMut(Duration, &Live),
) -> Result<(Stats, Duration), DriveError> {
    if requests.load().1.kinds.is_empty() || load.connections == 0 {
        return Err(DriveError::Start("nothing to send".into()));
    }
    let threads = load.threads.clamp(1, load.connections);
    let live = Arc::new(Live {
        counters: (0..threads).map(|_| Counter::default()).collect(),
    });
    let template = Stats::new().map_err(|e| DriveError::Start(e.to_string()))?;
    let shared = Arc::new(Shared {
        load: Load {
            threads,
            ..load.clone()
        },
        requests,
        template,
        live: live.clone(),
    });
    let start = Instant::now();
    let handles = (0..threads)
        .map(|t| {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("loadtest-{t}"))
                .spawn(move || run_thread(&shared, t, start))
                .map_err(|e| DriveError::Start(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        tick(start.elapsed(), &live);
    }
    let elapsed = start.elapsed().min(load.duration);
    let mut total = shared.template.clone();
    for handle in handles {
        let stats = handle
            .join()
            .map_err(|_| DriveError::Start("a load thread panicked".into()))??;
        total.merge(&stats);
    }
    Ok((total, elapsed))
}

fn run_thread(shared: &Arc<Shared>, thread: usize, start: Instant) -> Result<Stats, DriveError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DriveError::Start(e.to_string()))?;
    let load = &shared.load;
    // Shared by this thread's connections only: they run one at a time, so never contended.
    let timeline = Arc::new(Mutex::new(Timeline::for_run(load.duration)));
    runtime.block_on(async {
        let tasks: Vec<_> = (thread..load.connections)
            .step_by(load.threads)
            .map(|c| {
                let conn = connection(shared.clone(), timeline.clone(), c, thread, start);
                tokio::spawn(conn)
            })
            .collect();
        let mut total = shared.template.clone();
        for task in tasks {
            let stats = task.await.map_err(|e| DriveError::Start(e.to_string()))?;
            total.merge(&stats);
        }
        if let Ok(timeline) = timeline.lock() {
            total.timeline.merge(&timeline);
        }
        Ok(total)
    })
}

/// Per-connection state that outlives the timed-out load loop.
struct ConnState {
    conn: Option<Connection>,
    opened: u64,
    in_flight_since: Option<Instant>,
}

async fn connection(
    shared: Arc<Shared>,
    timeline: Arc<Mutex<Timeline>>,
    c: usize,
    thread: usize,
    start: Instant,
) -> Stats {
    let deadline = start + shared.load.duration;
    let mut stats = shared.template.clone();
    let mut state = ConnState {
        conn: None,
        opened: 0,
        in_flight_since: None,
    };
    let looped = load_loop(&shared, &timeline, c, thread, start, &mut stats, &mut state);
    // The loop never ends by itself: the deadline cancels it between or inside exchanges.
    let _ = tokio::time::timeout_at(deadline, looped).await;
    if let Some(sent) = state.in_flight_since {
        if deadline.saturating_duration_since(sent) >= shared.load.timeout {
            stats.errors.timeout += 1;
        }
    }
    stats.reconnects = state.opened.saturating_sub(1);
    stats
}

async fn load_loop(
    shared: &Shared,
    timeline: &Mutex<Timeline>,
    c: usize,
    thread: usize,
    start: Instant,
    stats: &mut Stats,
    state: &mut ConnState,
) {
    let load = &shared.load;
    let (mut version, mut requests) = shared.requests.load();
    let counter = &shared.live.counters[thread];
    let total = requests.kinds.len();
    let interval = load
        .rate
        .map(|r| Duration::from_secs_f64(load.connections as f64 / r));
    let first = interval.map(|iv| start + iv.mul_f64(c as f64 / load.connections as f64));
    // Responses completing a hair after the deadline count in the last full second.
    let last_second = (load.duration.as_secs_f64().ceil() as usize).saturating_sub(1);
    let mut i = c % total.max(1);
    let mut sent_count: u32 = 0;
    loop {
        let intended = match (first, interval) {
            (Some(first), Some(iv)) => {
                let at = first + iv * sent_count;
                sent_count = sent_count.saturating_add(1);
                if at > Instant::now() {
                    tokio::time::sleep_until(at).await;
                }
                Some(at)
            }
            _ => None,
        };
        if shared.requests.version.load(Ordering::Acquire) != version {
            (version, requests) = shared.requests.load();
        }
        let sent = Instant::now();
        state.in_flight_since = Some(sent);
        let result = exchange(&load.endpoint, state, &requests, i).await;
        let done = Instant::now();
        state.in_flight_since = None;
        match result {
            Ok(response) => {
                let latency = done - intended.unwrap_or(sent);
                let second = ((done - start).as_secs() as usize).min(last_second);
                let kind = requests.kinds[i];
                stats.response(kind, response.status, latency, second);
                if let Ok(mut timeline) = timeline.lock() {
                    timeline.record(kind, second, micros(latency));
                }
                counter.responses.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                stats.error(&err);
                counter.errors.fetch_add(1, Ordering::Relaxed);
                if matches!(err, ClientError::Connect(_)) {
                    // A refused connect fails in microseconds: do not spin on it.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        i += load.connections;
        if i >= total {
            i %= total;
        }
    }
}

/// An open connection of either protocol.
enum Connection {
    Http1(Conn),
    Http2(H2Conn),
}

/// Request `i` of `requests` on the connection, reconnecting first when needed; a request that
/// met the server's idle close is resent once on a fresh connection.
async fn exchange(
    endpoint: &Endpoint,
    state: &mut ConnState,
    requests: &Requests,
    i: usize,
) -> Result<Response, ClientError> {
    loop {
        if state.conn.is_none() {
            state.opened += 1;
            state.conn = Some(match requests.wire {
                Wire::Http1(_) => Connection::Http1(Conn::connect(endpoint).await?),
                Wire::Http2(_) => Connection::Http2(H2Conn::connect(endpoint).await?),
            });
        }
        let Some(conn) = state.conn.as_mut() else {
            continue;
        };
        let result = match (conn, &requests.wire) {
            (Connection::Http1(c), Wire::Http1(bytes)) => {
                c.exchange(&bytes[i], requests.head).await.map_err(|e| {
                    let retry = c.idle_close(&e);
                    (e, retry)
                })
            }
            (Connection::Http2(c), Wire::Http2(heads)) => {
                c.exchange(&heads[i]).await.map_err(|e| (e, false))
            }
            _ => Err((ClientError::Parse("protocol changed mid-run"), false)),
        };
        match result {
            Ok(response) => {
                if !response.keep_alive {
                    state.conn = None;
                }
                return Ok(response);
            }
            Err((err, retry)) => {
                state.conn = None;
                if !retry {
                    return Err(err);
                }
            }
        }
    }
}
