//! A circuit breaker in front of S3, so an outage costs one timeout per cooldown instead of one
//! per request.
//!
//! Closed: every request goes to S3; `failures` consecutive failures open it. Open: requests are
//! refused at once for `cooldown`. Then one request (the probe) is let through: its success closes
//! the breaker, its failure opens it for another cooldown. A probe that is cancelled before it
//! reports (its [`Permit`] dropped) lets the next request probe instead, so the breaker can never
//! stay half-open forever.
//!
//! Time is `tokio::time::Instant`, so tests drive it with a paused clock.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everyone else is refused until it reports.
    HalfOpen,
}

/// Reports state changes (e.g. to the `s3_up` gauge).
pub type OnChange = Box<dyn Fn(bool) + Send + Sync>;

pub struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
    on_change: Option<OnChange>,
}

/// Permission to make one S3 request; report its outcome with [`Permit::success`] or
/// [`Permit::failure`]. Dropping it unreported counts as neither.
#[must_use = "report the outcome of the request"]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration, on_change: Option<OnChange>) -> Breaker {
        let breaker = Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            cooldown,
            on_change,
        };
        breaker.notify(true);
        breaker
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every transition is a single assignment: a poisoned lock still holds a valid state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self, up: bool) {
        if let Some(f) = &self.on_change {
            f(up);
        }
    }

    /// Whether S3 is currently considered usable (the breaker is closed).
    pub fn is_up(&self) -> bool {
        matches!(*self.lock(), State::Closed { .. })
    }

    /// Asks to make a request: `None` means skip S3 now.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let mut state = self.lock();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => return None,
        };
        Some(Permit {
            breaker: self,
            probe,
            reported: false,
        })
    }

    /// Records the outcome of a request made without asking first (uploads, which have their
    /// own backoff, still tell the breaker what they learned about S3).
    pub fn record(&self, ok: bool) {
        if ok {
            self.succeeded();
        } else {
            self.failed(false);
        }
    }

    fn succeeded(&self) {
        let was_up = {
            let mut state = self.lock();
            let was_up = matches!(*state, State::Closed { .. });
            *state = State::Closed { failures: 0 };
            was_up
        };
        if !was_up {
            tracing::info!("S3 reachable again: circuit breaker closed");
            self.notify(true);
        }
    }

    fn failed(&self, probe: bool) {
        let opened = {
            let mut state = self.lock();
            match *state {
                State::Closed { failures } if failures + 1 < self.threshold => {
                    *state = State::Closed {
                        failures: failures + 1,
                    };
                    false
                }
                State::Closed { .. } => {
                    *state = State::Open {
                        until: Instant::now() + self.cooldown,
                    };
                    true
                }
                // A failed probe (or any failure while half-open) starts a new cooldown.
                State::HalfOpen => {
                    *state = State::Open {
                        until: Instant::now() + self.cooldown,
                    };
                    false
                }
                // Already open: an upload failing meanwhile doesn't extend the cooldown, but a
                // failed probe would have been HalfOpen.
                State::Open { .. } => {
                    debug_assert!(!probe);
                    false
                }
            }
        };
        if opened {
            tracing::warn!(cooldown = ?self.cooldown, "S3 failing: circuit breaker open, skipping S3");
            self.notify(false);
        }
    }

    fn abandoned(&self) {
        let mut state = self.lock();
        if *state == State::HalfOpen {
            // The probe never finished: let the next request probe right away.
            *state = State::Open {
                until: Instant::now(),
            };
        }
    }
}

impl Permit<'_> {
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.succeeded();
    }

    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.failed(self.probe);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.breaker.abandoned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_probes_after_cooldown() {
        let b = Breaker::new(3, Duration::from_secs(10), None);
        b.try_acquire().unwrap().failure();
        b.try_acquire().unwrap().failure();
        b.try_acquire().unwrap().success(); // resets the count
        for _ in 0..3 {
            b.try_acquire().unwrap().failure();
        }
        assert!(!b.is_up());
        assert!(b.try_acquire().is_none());
        tokio::time::advance(Duration::from_secs(10)).await;
        let probe = b.try_acquire().expect("one probe after the cooldown");
        assert!(b.try_acquire().is_none(), "only one probe at a time");
        probe.failure();
        assert!(
            b.try_acquire().is_none(),
            "a failed probe starts a new cooldown"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        b.try_acquire().unwrap().success();
        assert!(b.is_up());
        assert!(b.try_acquire().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_lets_the_next_request_probe() {
        let b = Breaker::new(1, Duration::from_secs(5), None);
        b.try_acquire().unwrap().failure();
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(b.try_acquire().unwrap());
        assert!(b.try_acquire().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn reports_state_changes() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let up = Arc::new(AtomicBool::new(false));
        let seen = up.clone();
        let b = Breaker::new(
            1,
            Duration::from_secs(1),
            Some(Box::new(move |v| seen.store(v, Ordering::SeqCst))),
        );
        assert!(up.load(Ordering::SeqCst));
        b.record(false);
        assert!(!up.load(Ordering::SeqCst));
        b.record(true);
        assert!(up.load(Ordering::SeqCst));
    }
}
