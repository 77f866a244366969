//! Power of two choices over peak-EWMA load.
//!
//! For each request two distinct endpoints are drawn at random and the one
//! with the lower cost wins, where cost = RTT estimate × (requests in
//! flight + 1). The RTT estimate is a *peak* EWMA: a slower sample replaces
//! it at once, faster samples pull it down exponentially with time
//! (`decay`), so an endpoint that turns slow is avoided immediately and
//! trusted again gradually. This is the balancer Linkerd popularised
//! (default RTT 30 ms, decay 10 s), with one change: an endpoint that has
//! not answered yet costs `default_rtt` × requests in flight — nothing when
//! idle — so a new endpoint (a scale-up) is tried at once and its first
//! response gives it a real estimate. Charging it the full default RTT
//! would starve it under light load, since a measured fast endpoint's
//! estimate only decays and never reaches the default.

use super::DiscoveredEndpoint;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Load estimates are dropped this long after their endpoint's last use,
/// so the table does not grow with endpoints that have gone away.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// P2C + peak-EWMA load, shared by all requests.
#[derive(Clone, Debug)]
pub struct PeakEwma {
    default_rtt: Duration,
    decay: Duration,
    strategy: Strategy,
    next: Arc<std::sync::atomic::AtomicUsize>,
    loads: Arc<Mutex<Loads>>,
}

/// How an endpoint is chosen (`WEFT_PROXY_BALANCER`). Only peak-EWMA is
/// meant for production; the others exist so the benchmark can compare.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// P2C over RTT estimate × in-flight (the default).
    #[default]
    PeakEwma,
    /// P2C over requests in flight only.
    LeastLoaded,
    /// Each endpoint in turn.
    RoundRobin,
}

impl std::str::FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "peak-ewma" => Ok(Self::PeakEwma),
            "least-loaded" => Ok(Self::LeastLoaded),
            "round-robin" => Ok(Self::RoundRobin),
            other => Err(format!(
                "unknown balancer {other:?} (peak-ewma, least-loaded, round-robin)"
            )),
        }
    }
}

#[derive(Debug, Default)]
struct Loads {
    by_addr: HashMap<SocketAddr, Load>,
    swept: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Load {
    rtt_ns: f64,
    updated: Instant,
    pending: u32,
    measured: bool,
}

/// Marks a request in flight on one endpoint; [`InFlight::done`] records
/// its RTT. Dropped without `done` (an error, or the client gave up), the
/// elapsed time is recorded only if it *raises* the estimate: a request
/// abandoned after a long wait is evidence of slowness, while a fast
/// failure must not make a failing endpoint look attractive.
#[derive(Debug)]
pub struct InFlight {
    loads: Arc<Mutex<Loads>>,
    addr: SocketAddr,
    start: Instant,
    decay: Duration,
    default_rtt: Duration,
    recorded: bool,
}

// === impl PeakEwma ===

impl PeakEwma {
    /// A balancer with Linkerd's defaults: 30 ms, 10 s.
    pub fn new(default_rtt: Duration, decay: Duration) -> Self {
        Self {
            default_rtt,
            decay,
            strategy: Strategy::PeakEwma,
            next: Arc::default(),
            loads: Arc::default(),
        }
    }

    /// The same balancer choosing by `strategy`.
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Picks an endpoint and marks a request in flight on it.
    pub fn pick<'a>(
        &self,
        endpoints: &'a [DiscoveredEndpoint],
    ) -> Option<(&'a DiscoveredEndpoint, InFlight)> {
        let now = Instant::now();
        let mut loads = self.loads.lock().unwrap_or_else(|p| p.into_inner());
        if loads
            .swept
            .is_none_or(|t| now.duration_since(t) > FORGET_AFTER)
        {
            loads
                .by_addr
                .retain(|_, l| now.duration_since(l.updated) < FORGET_AFTER || l.pending > 0);
            loads.swept = Some(now);
        }
        let chosen = match endpoints.len() {
            0 => return None,
            1 => &endpoints[0],
            n if self.strategy == Strategy::RoundRobin => {
                &endpoints[self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n]
            }
            n => {
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                let (ea, eb) = (&endpoints[a], &endpoints[b]);
                if self.cost(&loads, ea.addr, now) <= self.cost(&loads, eb.addr, now) {
                    ea
                } else {
                    eb
                }
            }
        };
        let default = self.default_rtt.as_nanos() as f64;
        let load = loads.by_addr.entry(chosen.addr).or_insert(Load {
            rtt_ns: default,
            updated: now,
            pending: 0,
            measured: false,
        });
        load.pending += 1;
        Some((
            chosen,
            InFlight {
                loads: self.loads.clone(),
                addr: chosen.addr,
                start: now,
                decay: self.decay,
                default_rtt: self.default_rtt,
                recorded: false,
            },
        ))
    }

    fn cost(&self, loads: &Loads, addr: SocketAddr, now: Instant) -> f64 {
        if self.strategy == Strategy::LeastLoaded {
            return loads.by_addr.get(&addr).map_or(0.0, |l| l.pending as f64);
        }
        match loads.by_addr.get(&addr) {
            None => 0.0,
            Some(l) if !l.measured => self.default_rtt.as_nanos() as f64 * l.pending as f64,
            Some(l) => decayed(l, now, self.decay) * (l.pending as f64 + 1.0),
        }
    }
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self::new(Duration::from_millis(30), Duration::from_secs(10))
    }
}

/// The RTT estimate decayed toward zero for the time since its update.
fn decayed(l: &Load, now: Instant, decay: Duration) -> f64 {
    let elapsed = now.duration_since(l.updated).as_secs_f64();
    l.rtt_ns * (-elapsed / decay.as_secs_f64()).exp()
}

// === impl InFlight ===

impl InFlight {
    /// Records the request's round-trip time (to response headers).
    pub fn done(mut self) {
        self.finish(false);
    }

    fn finish(&mut self, only_if_slower: bool) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        let now = Instant::now();
        let mut loads = self.loads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = loads.by_addr.get_mut(&self.addr) {
            l.pending = l.pending.saturating_sub(1);
            let rtt = now.duration_since(self.start).as_nanos() as f64;
            let current = if l.measured {
                decayed(l, now, self.decay)
            } else {
                0.0
            };
            // An unmeasured endpoint is only judged slow beyond the default.
            let floor = if l.measured {
                current
            } else {
                self.default_rtt.as_nanos() as f64
            };
            if !only_if_slower || rtt > floor {
                if !l.measured {
                    l.measured = true;
                    l.rtt_ns = 0.0;
                }
                // Peak: jump up at once; otherwise move toward the sample.
                l.rtt_ns = if rtt > current {
                    rtt
                } else {
                    let w = (-(now.duration_since(l.updated).as_secs_f64())
                        / self.decay.as_secs_f64())
                    .exp();
                    current * w + rtt * (1.0 - w)
                };
                l.updated = now;
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.finish(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: u16) -> Vec<DiscoveredEndpoint> {
        (0..n)
            .map(|i| DiscoveredEndpoint {
                addr: SocketAddr::from(([10, 0, 0, 1], 1000 + i)),
                identity: None,
                h2: false,
                labels: Arc::from(Vec::new()),
            })
            .collect()
    }

    #[test]
    fn a_slow_endpoint_gets_few_requests() {
        let b = PeakEwma::default();
        let eps = eps(3);
        // Teach it: endpoint 0 answered in 50 ms, the others in 1 ms.
        for (i, rtt) in [(0, 50), (1, 1), (2, 1)] {
            let mut loads = b.loads.lock().unwrap();
            loads.by_addr.insert(
                eps[i].addr,
                Load {
                    rtt_ns: Duration::from_millis(rtt).as_nanos() as f64,
                    updated: Instant::now(),
                    pending: 0,
                    measured: true,
                },
            );
        }
        let mut slow = 0;
        for _ in 0..3000 {
            let (ep, inflight) = b.pick(&eps).unwrap();
            slow += (ep.addr == eps[0].addr) as u32;
            drop(inflight);
        }
        // P2C only picks the slow one when both draws are it: never, with
        // distinct draws among 3.
        assert_eq!(slow, 0, "slow endpoint picked {slow} times of 3000");
    }

    #[test]
    fn in_flight_requests_spread_load() {
        let b = PeakEwma::default();
        let eps = eps(2);
        let (first, _a) = b.pick(&eps).unwrap();
        let first = first.addr;
        // With one request pending on `first`, the other costs less.
        let (second, _b) = b.pick(&eps).unwrap();
        assert_ne!(second.addr, first);
    }

    #[test]
    fn new_endpoints_are_tried() {
        let b = PeakEwma::default();
        let mut eps = eps(1);
        // One fast, measured endpoint...
        for _ in 0..10 {
            let (_, f) = b.pick(&eps).unwrap();
            f.done();
        }
        // ...and a scale-up: the newcomer is picked while unmeasured.
        eps.push(DiscoveredEndpoint {
            addr: SocketAddr::from(([10, 0, 0, 2], 1)),
            identity: None,
            h2: false,
            labels: Arc::from(Vec::new()),
        });
        let (ep, _f) = b.pick(&eps).unwrap();
        assert_eq!(ep.addr, eps[1].addr);
    }

    fn eps2() -> Vec<DiscoveredEndpoint> {
        vec![DiscoveredEndpoint {
            addr: SocketAddr::from(([10, 0, 0, 9], 9)),
            identity: None,
            h2: false,
            labels: Arc::from(Vec::new()),
        }]
    }

    #[test]
    fn abandoned_slow_requests_count_fast_failures_do_not() {
        let b = PeakEwma::default();
        let eps = eps(1);
        let (_, f) = b.pick(&eps).unwrap();
        f.done();
        let before = b.loads.lock().unwrap().by_addr[&eps[0].addr].rtt_ns;
        // A fast failure (dropped at once) leaves the estimate alone...
        drop(b.pick(&eps).unwrap().1);
        assert!(b.loads.lock().unwrap().by_addr[&eps[0].addr].rtt_ns <= before);
        // ...and does not make a new endpoint look measured and fast.
        let fresh = eps2();
        drop(b.pick(&fresh).unwrap().1);
        assert!(!b.loads.lock().unwrap().by_addr[&fresh[0].addr].measured);
        // A request abandoned after a long wait raises it.
        let (_, f) = b.pick(&eps).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        drop(f);
        assert!(b.loads.lock().unwrap().by_addr[&eps[0].addr].rtt_ns >= 30e6);
    }

    #[test]
    fn peak_then_decay() {
        let b = PeakEwma::new(Duration::from_millis(1), Duration::from_millis(100));
        let eps = eps(1);
        let (_, f) = b.pick(&eps).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        f.done();
        let rtt = b.loads.lock().unwrap().by_addr[&eps[0].addr].rtt_ns;
        assert!(rtt >= 20e6, "peak taken at once: {rtt}");
        std::thread::sleep(Duration::from_millis(200));
        let l = b.loads.lock().unwrap().by_addr[&eps[0].addr];
        assert!(decayed(&l, Instant::now(), b.decay) < rtt / 5.0, "decays");
    }
}
