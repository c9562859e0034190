//! The log sink: lines are appended to one in-memory batch and a writer thread writes the batch
//! to stderr every [`FLUSH_EVERY`], or as soon as it holds [`FLUSH_AT`] bytes.
//!
//! Why not `tracing_appender::non_blocking`: its worker blocks on the channel, so under load it is
//! woken for nearly every line, writes that line with its own `write(2)` and goes back to sleep.
//! With the gateway's per-request access line that is a futex wake, two context switches and a
//! write per request on the request's core: about a tenth of the proxy's throughput (issue 17,
//! `benches/compare-envoy --log-compare`). Here a request pays a lock and a copy of its line; the
//! writer ticks every [`FLUSH_EVERY`] and pays one `write` per batch. While lines keep coming
//! nothing wakes it but its clock, or a batch growing past [`FLUSH_AT`] (at 30,000 lines a
//! second, about 100 times a second). A first version also woke it for the first line of every
//! batch: twice the wakes, each a context switch on the proxy's core (perf of plain proxying:
//! 0.23 against 0.17 µs a request in `finish_task_switch`, throughput the same within noise). A
//! larger `FLUSH_AT` (256 KiB: 0.08 µs there) made the copy into the batch dearer by as much (a
//! buffer that no longer stays in the core's cache). After [`PARK_AFTER`] without a line the
//! writer stops ticking and the next line wakes it, so an idle gateway does not wake 20 times a
//! second.
//!
//! Still true, as before: a request never waits on a write (the batch is bounded at
//! [`MAX_PENDING`] bytes; a line that does not fit is dropped and counted, never blocks), and the
//! guard returned by [`LogSink::stderr`] writes out what is pending when it is dropped.
//! A line waits at most [`FLUSH_EVERY`] before it is written.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest a line waits in the batch before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// A batch this large is written at once, without waiting for [`FLUSH_EVERY`].
pub const FLUSH_AT: usize = 64 * 1024;
/// The writer stops ticking after this long without a line; the next line wakes it.
pub const PARK_AFTER: Duration = Duration::from_secs(1);
/// Bytes the batch may hold; a line that would go beyond is dropped and counted.
pub const MAX_PENDING: usize = 8 * 1024 * 1024;

struct Batch {
    bytes: Vec<u8>,
    stop: bool,
}

struct Shared {
    batch: Mutex<Batch>,
    wake: Condvar,
    dropped: AtomicU64,
    /// Set while the writer is parked (no line for [`PARK_AFTER`]): only then does a line need
    /// to wake it.
    idle: AtomicBool,
    max_pending: usize,
    /// [`FLUSH_EVERY`], but for tests.
    flush_every: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Batch> {
        // A panic while holding the lock can only come from an allocation failure; the batch is
        // plain bytes, still usable.
        self.batch.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where the fmt layer writes: `MakeWriter` for `tracing_subscriber`. Cheap to clone.
#[derive(Clone)]
pub struct LogSink {
    /// `None`: no writer thread could be started; lines go straight to stderr.
    shared: Option<Arc<Shared>>,
}

/// Writes out what is pending and stops the writer thread when dropped.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogSink {
    /// A sink writing to stderr from a thread named `thread_name`. Should the thread not start,
    /// it says so and writes each line straight to stderr: logging goes on, unbatched.
    pub fn stderr(thread_name: &str) -> (LogSink, Option<FlushGuard>) {
        match LogSink::with_limit(io::stderr(), thread_name, MAX_PENDING, FLUSH_EVERY) {
            Ok((sink, guard)) => (sink, Some(guard)),
            Err(e) => {
                eprintln!("portcullis: logging without a writer thread: {e}");
                (LogSink { shared: None }, None)
            }
        }
    }

    fn with_limit(
        mut out: impl Write + Send + 'static,
        thread_name: &str,
        max_pending: usize,
        flush_every: Duration,
    ) -> io::Result<(LogSink, FlushGuard)> {
        let shared = Arc::new(Shared {
            batch: Mutex::new(Batch {
                bytes: Vec::with_capacity(FLUSH_AT * 2),
                stop: false,
            }),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
            idle: AtomicBool::new(false),
            max_pending,
            flush_every,
        });
        let writer = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(thread_name.to_string())
            .spawn(move || write_batches(&writer, &mut out))?;
        Ok((
            LogSink {
                shared: Some(Arc::clone(&shared)),
            },
            FlushGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Lines dropped because the batch was full.
    pub fn dropped(&self) -> u64 {
        self.shared
            .as_ref()
            .map_or(0, |s| s.dropped.load(Ordering::Relaxed))
    }

    /// Add one line (one `write` call of the fmt layer is one whole event; the access line's
    /// direct writer pushes its lines here too).
    pub fn push(&self, line: &[u8]) {
        let Some(shared) = self.shared.as_deref() else {
            let _ = io::stderr().write_all(line);
            return;
        };
        let mut batch = shared.lock();
        if batch.bytes.len() + line.len() > shared.max_pending {
            drop(batch);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = batch.bytes.len();
        batch.bytes.extend_from_slice(line);
        let crossed = before < FLUSH_AT && batch.bytes.len() >= FLUSH_AT;
        drop(batch);
        // Wake the writer only when it has to act: it is parked, or the batch just grew past
        // FLUSH_AT. A plain load first, so the usual line (writer ticking) writes no shared
        // flag: the writer sets `idle` under the lock this push has since taken, and only with
        // the batch empty, so the load cannot miss it.
        if crossed
            || (shared.idle.load(Ordering::Relaxed) && shared.idle.swap(false, Ordering::AcqRel))
        {
            shared.wake.notify_one();
        }
    }
}

/// The writer thread: every [`FLUSH_EVERY`] (or when the batch passes [`FLUSH_AT`]) take the
/// batch (the lock is held only to swap two buffers) and write it; after [`PARK_AFTER`] of empty
/// ticks, sleep until a line wakes it; on stop, write what is left.
fn write_batches(shared: &Shared, out: &mut dyn Write) {
    let mut spare: Vec<u8> = Vec::with_capacity(FLUSH_AT * 2);
    let mut last_line = Instant::now();
    loop {
        let mut batch = shared.lock();
        let mut tick = Instant::now() + shared.flush_every;
        loop {
            if batch.stop || batch.bytes.len() >= FLUSH_AT {
                break;
            }
            let now = Instant::now();
            if batch.bytes.is_empty() && now.duration_since(last_line) >= PARK_AFTER {
                shared.idle.store(true, Ordering::Release);
                batch = shared
                    .wake
                    .wait(batch)
                    .unwrap_or_else(PoisonError::into_inner);
                shared.idle.store(false, Ordering::Relaxed);
                // The line that woke it waits at most one interval.
                last_line = Instant::now();
                tick = last_line + shared.flush_every;
                continue;
            }
            if now >= tick {
                if !batch.bytes.is_empty() {
                    break;
                }
                tick = now + shared.flush_every;
            }
            batch = shared
                .wake
                .wait_timeout(batch, tick.saturating_duration_since(now))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let stop = batch.stop;
        std::mem::swap(&mut batch.bytes, &mut spare);
        drop(batch);
        if !spare.is_empty() {
            last_line = Instant::now();
            // Nowhere to report a failed write of the log itself; the next batch tries again.
            let _ = out.write_all(&spare).and_then(|()| out.flush());
            // Keep the buffer's capacity for the next swap, unless a burst made it huge.
            if spare.capacity() > FLUSH_AT * 16 {
                spare = Vec::with_capacity(FLUSH_AT * 2);
            }
            spare.clear();
        }
        if stop {
            return;
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One event's writer: the fmt layer formats the whole event, then calls `write_all` once.
pub struct LineWriter<'a> {
    sink: &'a LogSink,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sink.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { sink: self }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A `Write` that hands each `write_all` batch to the test.
    struct Tap(mpsc::Sender<Vec<u8>>);

    impl Write for Tap {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.0.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn line(sink: &LogSink, text: &str) {
        use tracing_subscriber::fmt::MakeWriter;
        sink.make_writer().write_all(text.as_bytes()).unwrap();
    }

    /// Batches until `lines` lines have arrived (each batch within 5 s).
    fn receive_lines(rx: &mpsc::Receiver<Vec<u8>>, lines: usize) -> (String, usize) {
        let (mut text, mut batches) = (String::new(), 0);
        while text.lines().count() < lines {
            let batch = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            text.push_str(&String::from_utf8(batch).unwrap());
            batches += 1;
        }
        (text, batches)
    }

    #[test]
    fn a_line_is_written_within_the_flush_interval_and_lines_are_batched() {
        let (tx, rx) = mpsc::channel();
        let (sink, _guard) =
            LogSink::with_limit(Tap(tx), "log-test", MAX_PENDING, FLUSH_EVERY).unwrap();
        for i in 0..100 {
            line(&sink, &format!("line {i}\n"));
        }
        // They arrive while the guard is alive (the ticks, not the guard's flush, wrote them), in
        // order, and batched: one batch, or two if a tick fell while they were being pushed.
        let (text, batches) = receive_lines(&rx, 100);
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
        assert!(batches <= 2, "{batches} batches");
        // With nothing more to write the writer parks; the next line wakes it.
        let shared = Arc::clone(sink.shared.as_ref().unwrap());
        let parked_by = Instant::now() + PARK_AFTER + Duration::from_secs(5);
        while !shared.idle.load(Ordering::Acquire) {
            assert!(Instant::now() < parked_by, "the writer never parked");
            // A bounded poll of the writer's own state (about a second): no need to spin a core.
            std::thread::sleep(Duration::from_millis(5));
        }
        line(&sink, "later\n");
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            b"later\n".to_vec()
        );
        assert_eq!(sink.dropped(), 0);
    }

    #[test]
    fn a_full_batch_is_written_without_waiting_for_the_interval() {
        let (tx, rx) = mpsc::channel();
        // An interval longer than the test: only the size can have triggered the write.
        let hour = Duration::from_secs(3600);
        let (sink, _guard) = LogSink::with_limit(Tap(tx), "log-test", MAX_PENDING, hour).unwrap();
        let chunk = "x".repeat(1023) + "\n";
        for _ in 0..(FLUSH_AT / chunk.len() + 1) {
            line(&sink, &chunk);
        }
        let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(got.len() >= FLUSH_AT, "{}", got.len());
    }

    #[test]
    fn lines_beyond_the_bound_are_dropped_and_counted_and_the_guard_flushes() {
        // A writer that blocks until the test lets it go, so the batch fills up.
        struct Gate(Arc<Mutex<()>>, mpsc::Sender<Vec<u8>>);
        impl Write for Gate {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let _held = self.0.lock().unwrap();
                let _ = self.1.send(buf.to_vec());
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let (tx, rx) = mpsc::channel();
        let (sink, guard) =
            LogSink::with_limit(Gate(Arc::clone(&gate), tx), "log-test", 1000, FLUSH_EVERY)
                .unwrap();
        // The first batch is taken by the writer, which then blocks in `write`.
        line(&sink, &"a".repeat(999));
        while !sink.shared.as_ref().unwrap().lock().bytes.is_empty() {
            std::thread::yield_now();
        }
        // Now the bound applies: 10 lines of 100 bytes fit, the next 5 do not.
        for _ in 0..15 {
            line(&sink, &"b".repeat(100));
        }
        assert_eq!(sink.dropped(), 5);
        drop(held);
        drop(guard); // writes what is pending, then joins
        let all: Vec<u8> = rx.try_iter().flatten().collect();
        assert_eq!(all.len(), 999 + 1000);
    }
}
