//! The load loop: one current-thread tokio runtime per OS thread (as wrk runs one event loop per
//! thread), each driving its share of keep-alive connections, closed-loop or on a fixed schedule.
//!
//! Open-loop latency is measured from the intended send time, so a stalled server shows up as
//! latency instead of silently lowering the request rate (coordinated omission).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::{ClientError, Conn, Response};
use crate::mint::Kind;
use crate::stats::Stats;

/// The pre-serialised requests, one per token, and what each must get.
pub struct Requests {
    /// Complete HTTP/1.1 request bytes.
    pub bytes: Vec<Box<[u8]>>,
    /// The kind of token each request carries.
    pub kinds: Vec<Kind>,
    /// Whether the method is HEAD (no response body).
    pub head: bool,
}

/// How to drive.
#[derive(Debug, Clone)]
pub struct Load {
    /// Server address (resolved once).
    pub addr: SocketAddr,
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
    requests: Arc<Requests>,
    template: Stats,
    live: Arc<Live>,
}

/// Runs the load; `tick(elapsed, live)` is called about every 100 ms from this thread.
/// Returns the merged counters and the measured run time.
pub fn drive(
    load: &Load,
    requests: Arc<Requests>,
    tick: &mut dyn FnMut(Duration, &Live),
) -> Result<(Stats, Duration), DriveError> {
    if requests.bytes.is_empty() || load.connections == 0 {
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
    runtime.block_on(async {
        let tasks: Vec<_> = (thread..load.connections)
            .step_by(load.threads)
            .map(|c| tokio::spawn(connection(shared.clone(), c, thread, start)))
            .collect();
        let mut total = shared.template.clone();
        for task in tasks {
            let stats = task.await.map_err(|e| DriveError::Start(e.to_string()))?;
            total.merge(&stats);
        }
        Ok(total)
    })
}

/// Per-connection state that outlives the timed-out load loop.
struct ConnState {
    conn: Option<Conn>,
    opened: u64,
    in_flight_since: Option<Instant>,
}

async fn connection(shared: Arc<Shared>, c: usize, thread: usize, start: Instant) -> Stats {
    let deadline = start + shared.load.duration;
    let mut stats = shared.template.clone();
    let mut state = ConnState {
        conn: None,
        opened: 0,
        in_flight_since: None,
    };
    let looped = load_loop(&shared, c, thread, start, &mut stats, &mut state);
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
    c: usize,
    thread: usize,
    start: Instant,
    stats: &mut Stats,
    state: &mut ConnState,
) {
    let load = &shared.load;
    let requests = &*shared.requests;
    let counter = &shared.live.counters[thread];
    let total = requests.bytes.len();
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
        let sent = Instant::now();
        state.in_flight_since = Some(sent);
        let result = exchange(load.addr, state, &requests.bytes[i], requests.head).await;
        let done = Instant::now();
        state.in_flight_since = None;
        match result {
            Ok(response) => {
                let latency = done - intended.unwrap_or(sent);
                let second = ((done - start).as_secs() as usize).min(last_second);
                stats.response(requests.kinds[i], response.status, latency, second);
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

/// One request on the connection, reconnecting first when needed; a request that met the
/// server's idle close is resent once on a fresh connection.
async fn exchange(
    addr: SocketAddr,
    state: &mut ConnState,
    request: &[u8],
    head: bool,
) -> Result<Response, ClientError> {
    loop {
        if state.conn.is_none() {
            state.opened += 1;
            state.conn = Some(Conn::connect(addr).await?);
        }
        let Some(conn) = state.conn.as_mut() else {
            continue;
        };
        match conn.exchange(request, head).await {
            Ok(response) => {
                if !response.keep_alive {
                    state.conn = None;
                }
                return Ok(response);
            }
            Err(err) => {
                let retry = conn.idle_close(&err);
                state.conn = None;
                if !retry {
                    return Err(err);
                }
            }
        }
    }
}
