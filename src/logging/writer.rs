//! The log's writer: each line is appended to a buffer that a thread of its own writes out in
//! batches, so a request never waits on stderr, and a busy log costs one write per batch.
//!
//! A line written to stderr from the runtime's threads was 14 % of a cached render's CPU
//! (BENCHMARKS.md round 6). tracing-appender's non-blocking writer, used since, passes lines
//! through a channel whose receiver spins (`sched_yield`) before it sleeps and woke for nearly
//! every line; this writer wakes once a batch, and a cached render costs ~19 % less CPU with
//! it (round 10).

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a line may wait for the rest of its batch.
const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// A batch this large is written at once.
const FLUSH_BYTES: usize = 64 * 1024;
/// Past this, logging waits for the writer (no line is dropped), so memory stays bounded.
const MAX_BYTES: usize = 1 << 20;

/// What loggers write to; see the module docs.
pub struct LogWriter {
    state: Mutex<State>,
    /// Wakes the writer: the first line of a batch, a full batch, or the end.
    work: Condvar,
    /// Wakes loggers waiting for room.
    room: Condvar,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    closed: bool,
}

/// Writes what is still pending, and ends the writer's thread, when dropped.
pub struct Guard {
    log: Arc<LogWriter>,
    thread: Option<JoinHandle<()>>,
}

/// A writer to `out` and its guard; keep the guard until the end.
pub fn batched(mut out: impl Write + Send + 'static) -> (Arc<LogWriter>, Guard) {
    let log = Arc::new(LogWriter { state: Mutex::default(), work: Condvar::new(), room: Condvar::new() });
    let writer = log.clone();
    let thread = std::thread::Builder::new()
        .name("log".into())
        .spawn(move || writer.write_batches(&mut out))
        .expect("the log's thread starts");
    (log.clone(), Guard { log, thread: Some(thread) })
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LogWriter {
    fn write_batches(&self, out: &mut impl Write) {
        let mut batch = Vec::new();
        loop {
            let mut state = lock(&self.state);
            while state.pending.is_empty() && !state.closed {
                state = self.work.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
            let deadline = Instant::now() + FLUSH_EVERY;
            while state.pending.len() < FLUSH_BYTES && !state.closed {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = self.work.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
            }
            std::mem::swap(&mut batch, &mut state.pending);
            let closed = state.closed;
            drop(state);
            self.room.notify_all();
            // A log that cannot be written has nowhere to say so.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            if closed {
                return;
            }
        }
    }
}

impl Write for &LogWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut state = lock(&self.state);
        while state.pending.len() >= MAX_BYTES && !state.closed {
            state = self.room.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        let before = state.pending.len();
        state.pending.extend_from_slice(line);
        let after = state.pending.len();
        drop(state);
        if before == 0 || (before < FLUSH_BYTES && after >= FLUSH_BYTES) {
            self.work.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        lock(&self.log.state).closed = true;
        self.log.work.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the writer's thread wrote, slowly when `delay` is set.
    #[derive(Clone, Default)]
    struct Out {
        bytes: Arc<Mutex<Vec<u8>>>,
        delay: Duration,
    }

    impl Write for Out {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            std::thread::sleep(self.delay);
            self.bytes.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(out: &Out) -> Vec<String> {
        String::from_utf8(out.bytes.lock().unwrap().clone()).unwrap().lines().map(str::to_owned).collect()
    }

    #[test]
    fn a_quiet_log_is_written_without_waiting_for_a_full_batch() {
        let out = Out::default();
        let (log, _guard) = batched(out.clone());
        // The second line finds the writer asleep, waiting for work.
        for (n, line) in ["one line", "another"].into_iter().enumerate() {
            (&*log).write_all(format!("{line}\n").as_bytes()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while lines(&out).len() <= n {
                assert!(Instant::now() < deadline, "{line:?} was not written within 10 s");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        assert_eq!(lines(&out), ["one line", "another"]);
    }

    #[test]
    fn a_slow_output_holds_loggers_back_and_loses_no_line() {
        let out = Out { delay: Duration::from_millis(20), ..Out::default() };
        let (log, guard) = batched(out.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        // One write a line, as tracing-subscriber writes an event.
                        let line = format!("thread {t} line {i} {}\n", "x".repeat(200));
                        (&*log).write_all(line.as_bytes()).unwrap();
                        assert!(
                            lock(&log.state).pending.len() <= MAX_BYTES + 300,
                            "the buffer stays bounded"
                        );
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(guard);
        let written = lines(&out);
        assert_eq!(written.len(), 20_000);
        for t in 0..4 {
            let own: Vec<usize> = written
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("thread {t} line ")))
                .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
                .collect();
            assert_eq!(own, (0..5000).collect::<Vec<_>>(), "every line of thread {t}, in order");
        }
    }
}
