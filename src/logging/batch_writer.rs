//! The log's writer thread and the buffer lines wait in for it.
//!
//! A logging thread appends its whole line to one shared buffer under a mutex (a copy of a
//! few hundred bytes) and goes on; the writer thread takes the buffer when it holds
//! [`BATCH_BYTES`], or [`GATHER_FOR`] after its first line, and writes it with one `write`.
//! The thread is woken only when a buffer gets its first line or reaches a batch, so under load
//! it wakes and writes once per batch instead of once per line or two (a channel of lines,
//! drained whenever it ran dry, measured about one `write` and one `sched_yield` per 1.6 access
//! lines under `wrk`). A line waits at most [`GATHER_FOR`] before it is written.
//!
//! When the buffer already holds [`MAX_QUEUED_BYTES`] (the log's reader stalled, so the thread
//! is stuck in `write`), new lines are dropped and counted instead of holding up the threads
//! that log, requests among them.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the writer thread gathers before it writes.
pub const BATCH_BYTES: usize = 64 * 1024;
/// The longest a line waits to be written.
pub const GATHER_FOR: Duration = Duration::from_millis(10);
/// Lines waiting for the writer at most (an access line is ~300 bytes: some 14,000 of them).
pub const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;

/// The logging threads' side: cheap to clone; `write` appends one whole line.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// The writer thread waits here for a first line, a full batch or the end.
    wake: Condvar,
    dropped: AtomicU64,
}

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    closing: bool,
}

/// Keeps the writer thread; dropping it writes what is buffered and ends the thread.
#[must_use = "dropping the guard stops the log writer"]
pub struct WriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BatchWriter {
    /// Starts the writer thread, writing to `out`.
    pub fn start(out: impl Write + Send + 'static) -> io::Result<(BatchWriter, WriterGuard)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn({
                let shared = shared.clone();
                move || write_batches(&shared, out)
            })?;
        let writer = BatchWriter {
            shared: shared.clone(),
        };
        let guard = WriterGuard {
            shared,
            thread: Some(thread),
        };
        Ok((writer, guard))
    }

    /// Lines dropped because the buffer was full.
    pub fn dropped_lines(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A buffer of bytes and a flag: consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Write for BatchWriter {
    /// Appends `line` whole (the subscriber and the access line each write one line per call),
    /// or drops it when the buffer is full. Never blocks on the log's output.
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut state = self.shared.lock();
        let before = state.lines.len();
        if before + line.len() > MAX_QUEUED_BYTES {
            drop(state);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(line.len());
        }
        state.lines.extend_from_slice(line);
        let after = state.lines.len();
        drop(state);
        // The thread sleeps until a first line arrives, and then until a batch is full.
        if before == 0 || (before < BATCH_BYTES && after >= BATCH_BYTES) {
            self.shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The writer thread: takes the buffer when a batch is full, [`GATHER_FOR`] after its first
/// line, or at the end, and writes it out.
fn write_batches(shared: &Shared, mut out: impl Write) {
    let mut taken = Vec::with_capacity(BATCH_BYTES);
    loop {
        let closing = {
            let mut state = shared.lock();
            loop {
                if state.closing || state.lines.len() >= BATCH_BYTES {
                    break;
                }
                if state.lines.is_empty() {
                    state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                    continue;
                }
                let (next, waited) = shared
                    .wake
                    .wait_timeout(state, GATHER_FOR)
                    .unwrap_or_else(|e| e.into_inner());
                state = next;
                if waited.timed_out() {
                    break;
                }
            }
            std::mem::swap(&mut state.lines, &mut taken);
            state.closing
        };
        if !taken.is_empty() {
            // A line that cannot be written (a full disk, a closed pipe) is dropped.
            let _ = out.write_all(&taken).and_then(|()| out.flush());
            taken.clear();
        }
        if closing && shared.lock().lines.is_empty() {
            return;
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that keeps what is written and counts the writes.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Kept {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut kept = self.0.lock().unwrap();
            kept.0.extend_from_slice(buf);
            kept.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Kept {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().0.clone()).unwrap()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().1
        }
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_in_few_writes() {
        let kept = Kept::default();
        let (writer, guard) = BatchWriter::start(kept.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        let line = format!("thread {t} line {i} {}\n", "x".repeat(200));
                        writer.write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let text = kept.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000, "every line, once");
        for t in 0..4 {
            // Each thread's lines whole and in its order.
            let mine: Vec<usize> = lines
                .iter()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .map(|l| {
                    assert!(l.ends_with(&"x".repeat(200)), "a whole line: {l}");
                    l.split(' ').nth(3).unwrap().parse().unwrap()
                })
                .collect();
            assert_eq!(mine, (0..5000).collect::<Vec<_>>());
        }
        // About 4.5 MB in batches of 64 KiB, not one write per line.
        assert!(kept.writes() < 2_000, "{} writes", kept.writes());
        assert_eq!(writer.dropped_lines(), 0);
    }

    #[test]
    fn a_lone_line_is_written_without_waiting_for_a_batch() {
        let kept = Kept::default();
        let (mut writer, _guard) = BatchWriter::start(kept.clone()).unwrap();
        writer.write_all(b"one line\n").unwrap();
        // Polled, not timed: it must arrive, however slow the machine.
        for _ in 0..1000 {
            if kept.text() == "one line\n" {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the line was never written");
    }

    /// An output that never returns: the log's reader stalled.
    struct Stalled(Arc<(Mutex<bool>, Condvar)>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (released, wake) = &*self.0;
            let mut released = released.lock().unwrap();
            while !*released {
                released = wake.wait(released).unwrap();
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_and_counts_lines_instead_of_blocking() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (mut writer, guard) = BatchWriter::start(Stalled(gate.clone())).unwrap();
        let line = vec![b'x'; 1000];
        // Far more than the buffer holds; every call returns at once.
        for _ in 0..3 * MAX_QUEUED_BYTES / line.len() {
            writer.write_all(&line).unwrap();
        }
        assert!(writer.dropped_lines() >= (MAX_QUEUED_BYTES / line.len()) as u64);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
    }
}
