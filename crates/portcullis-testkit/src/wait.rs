//! Bounded polling for state that settles just after a response: the gateway counts a request in
//! pingora's `logging` hook, which runs after the response is on its way, so a test that reads
//! `/metrics` straight after a response races it. Tests poll the real endpoint instead of sleeping
//! a guessed time.

use std::future::Future;
use std::time::Duration;

/// Fetches (e.g. `/metrics`) until `done` holds for the text, at most `attempts` times with 10 ms
/// between them; returns the last text either way, so the caller's assertion reports what it saw.
pub async fn poll_text<F, Fut>(attempts: usize, mut fetch: F, done: impl Fn(&str) -> bool) -> String
where
    F: FnMut() -> Fut,
    Fut: Future<Output = String>,
{
    let mut text = fetch().await;
    for _ in 1..attempts.max(1) {
        if done(&text) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        text = fetch().await;
    }
    text
}
