//! Power of two choices over peak-EWMA load: the endpoint choice of one
//! backend (the outbound stack builds one [`PeakEwma`] per concrete
//! target, see [`crate::outbound::concrete`]).
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
//!
//! **Failure accrual** (circuit breaking): an endpoint whose responses fail
//! [`Accrual::max_failures`] times in a row is ejected — not picked — for
//! a penalty that starts at `min_penalty` and doubles (with jitter) each
//! time a probe fails, up to `max_penalty`. When the penalty ends, one
//! request probes it; a success brings it back. If every endpoint of a
//! service is ejected, requests fail at once (503) instead of queueing
//! behind endpoints known to fail. Latency alone never ejects: slowness
//! is what peak-EWMA handles.

use crate::discovery::DiscoveredEndpoint;
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
    accrual: Accrual,
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

/// Failure accrual settings (`WEFT_PROXY_FAILURE_ACCRUAL_*`); Linkerd's
/// defaults: 7 consecutive failures, penalty 1 s doubling to 60 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accrual {
    /// Consecutive failures that eject an endpoint; 0 disables ejection.
    pub max_failures: u32,
    /// The first ejection's length.
    pub min_penalty: Duration,
    /// The longest ejection.
    pub max_penalty: Duration,
}

impl Default for Accrual {
    fn default() -> Self {
        Self {
            max_failures: 7,
            min_penalty: Duration::from_secs(1),
            max_penalty: Duration::from_secs(60),
        }
    }
}

/// Why no endpoint could be picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// The service has no endpoints.
    NoEndpoints,
    /// Every one of this many endpoints is ejected for failing.
    AllFailing(usize),
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
    /// Failures since the last success.
    failures: u32,
    /// Ejected until then (`Some` also while a probe is out).
    ejected_until: Option<Instant>,
    /// The current ejection's length (doubles per failed probe).
    penalty: Duration,
    /// A probe request is in flight: no other request until it answers.
    probing: bool,
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
    accrual: Accrual,
    recorded: bool,
    /// This request probes an ejected endpoint.
    probe: bool,
}

// === impl PeakEwma ===

impl PeakEwma {
    /// A balancer with Linkerd's defaults: 30 ms, 10 s.
    pub fn new(default_rtt: Duration, decay: Duration) -> Self {
        Self {
            default_rtt,
            decay,
            strategy: Strategy::PeakEwma,
            accrual: Accrual::default(),
            next: Arc::default(),
            loads: Arc::default(),
        }
    }

    /// The same balancer choosing by `strategy`.
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// A balancer with the same settings and no load state of its own
    /// yet: each backend gets one, so one service's estimates never sway
    /// another's picks.
    pub fn fresh(&self) -> Self {
        Self {
            next: Arc::default(),
            loads: Arc::default(),
            ..self.clone()
        }
    }

    /// The same balancer with these failure accrual settings.
    pub fn with_accrual(mut self, accrual: Accrual) -> Self {
        self.accrual = accrual;
        self
    }

    /// Picks an endpoint that is not ejected and marks a request in
    /// flight on it.
    pub fn pick<'a>(
        &self,
        endpoints: &'a [DiscoveredEndpoint],
    ) -> Result<(&'a DiscoveredEndpoint, InFlight), Unavailable> {
        let now = Instant::now();
        let mut loads = self.loads.lock().unwrap_or_else(|p| p.into_inner());
        if loads
            .swept
            .is_none_or(|t| now.duration_since(t) > FORGET_AFTER)
        {
            loads.by_addr.retain(|_, l| {
                now.duration_since(l.updated) < FORGET_AFTER
                    || l.pending > 0
                    || l.ejected_until.is_some()
            });
            loads.swept = Some(now);
        }
        if endpoints.is_empty() {
            return Err(Unavailable::NoEndpoints);
        }
        let usable =
            |ep: &DiscoveredEndpoint| loads.by_addr.get(&ep.addr).is_none_or(|l| l.usable(now));
        let chosen = if endpoints.iter().all(usable) {
            self.choose(&loads, endpoints.len(), |i| &endpoints[i], now)
        } else {
            let eligible: Vec<&DiscoveredEndpoint> =
                endpoints.iter().filter(|e| usable(e)).collect();
            if eligible.is_empty() {
                return Err(Unavailable::AllFailing(endpoints.len()));
            }
            self.choose(&loads, eligible.len(), |i| eligible[i], now)
        };
        let default = self.default_rtt.as_nanos() as f64;
        let load = loads.by_addr.entry(chosen.addr).or_insert(Load {
            rtt_ns: default,
            updated: now,
            pending: 0,
            measured: false,
            failures: 0,
            ejected_until: None,
            penalty: Duration::ZERO,
            probing: false,
        });
        load.pending += 1;
        // An ejected endpoint whose penalty is over gets this one request.
        let probe = load.ejected_until.is_some();
        load.probing |= probe;
        Ok((
            chosen,
            InFlight {
                loads: self.loads.clone(),
                addr: chosen.addr,
                start: now,
                decay: self.decay,
                default_rtt: self.default_rtt,
                accrual: self.accrual,
                recorded: false,
                probe,
            },
        ))
    }

    /// P2C (or round-robin) among `n` candidates.
    fn choose<'a>(
        &self,
        loads: &Loads,
        n: usize,
        at: impl Fn(usize) -> &'a DiscoveredEndpoint,
        now: Instant,
    ) -> &'a DiscoveredEndpoint {
        match n {
            1 => at(0),
            n if self.strategy == Strategy::RoundRobin => {
                at(self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n)
            }
            n => {
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                let (ea, eb) = (at(a), at(b));
                if self.cost(loads, ea.addr, now) <= self.cost(loads, eb.addr, now) {
                    ea
                } else {
                    eb
                }
            }
        }
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

// === impl Load ===

impl Load {
    /// True if a request may go to this endpoint now.
    fn usable(&self, now: Instant) -> bool {
        match self.ejected_until {
            None => true,
            Some(until) => now >= until && !self.probing,
        }
    }

    /// Counts a response toward failure accrual.
    fn accrue(&mut self, success: bool, probe: bool, accrual: &Accrual, addr: SocketAddr) {
        let now = Instant::now();
        if success {
            if self.ejected_until.is_some() {
                tracing::info!(%addr, "endpoint answered a probe; back in rotation");
            }
            self.failures = 0;
            self.ejected_until = None;
            self.penalty = Duration::ZERO;
            self.probing = false;
            return;
        }
        self.failures = self.failures.saturating_add(1);
        if probe {
            // A failed probe: eject again, twice as long (with jitter).
            self.probing = false;
            let doubled = (self.penalty * 2).min(accrual.max_penalty);
            self.penalty = doubled.max(accrual.min_penalty);
            self.ejected_until = Some(now + jittered(self.penalty));
        } else if accrual.max_failures > 0
            && self.failures >= accrual.max_failures
            && self.ejected_until.is_none()
        {
            self.penalty = accrual.min_penalty;
            self.ejected_until = Some(now + jittered(self.penalty));
            tracing::warn!(
                %addr,
                failures = self.failures,
                penalty = ?self.penalty,
                "endpoint ejected after consecutive failures"
            );
        }
    }
}

/// `d` stretched by up to half again, so ejected endpoints of a service
/// that failed together are not all probed at the same instant.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 + fastrand::f64() * 0.5)
}

/// The RTT estimate decayed toward zero for the time since its update.
fn decayed(l: &Load, now: Instant, decay: Duration) -> f64 {
    let elapsed = now.duration_since(l.updated).as_secs_f64();
    l.rtt_ns * (-elapsed / decay.as_secs_f64()).exp()
}

// === impl InFlight ===

impl InFlight {
    /// Records the request's round-trip time (to response headers) and,
    /// for failure accrual, whether the response was a success.
    pub fn done(mut self, success: bool) {
        self.finish(false, Some(success));
    }

    /// Records a request that failed without a response (connection
    /// refused, reset): a failure, and its elapsed time only if slow.
    pub fn failed(mut self) {
        self.finish(true, Some(false));
    }

    /// For opaque TCP: the connection is established. Its time to connect
    /// (and handshake) is the RTT sample and counts as a success, and the
    /// connection stays counted in flight until the returned guard drops,
    /// so P2C prefers endpoints with fewer open connections.
    pub fn established(mut self) -> Open {
        self.finish_keeping(false, Some(true), true);
        Open {
            loads: self.loads.clone(),
            addr: self.addr,
        }
    }

    fn finish(&mut self, only_if_slower: bool, success: Option<bool>) {
        self.finish_keeping(only_if_slower, success, false)
    }

    fn finish_keeping(&mut self, only_if_slower: bool, success: Option<bool>, keep: bool) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        let now = Instant::now();
        let mut loads = self.loads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = loads.by_addr.get_mut(&self.addr) {
            if !keep {
                l.pending = l.pending.saturating_sub(1);
            }
            match success {
                Some(ok) => l.accrue(ok, self.probe, &self.accrual, self.addr),
                // Abandoned: the probe proved nothing; allow another.
                None if self.probe => l.probing = false,
                None => {}
            }
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
        self.finish(true, None);
    }
}

/// An established opaque connection, counted in flight on its endpoint
/// until dropped (see [`InFlight::established`]).
#[derive(Debug)]
pub struct Open {
    loads: Arc<Mutex<Loads>>,
    addr: SocketAddr,
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut loads = self.loads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = loads.by_addr.get_mut(&self.addr) {
            l.pending = l.pending.saturating_sub(1);
        }
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
                    failures: 0,
                    ejected_until: None,
                    penalty: Duration::ZERO,
                    probing: false,
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
            f.done(true);
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
        f.done(true);
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
        f.done(true);
        let rtt = b.loads.lock().unwrap().by_addr[&eps[0].addr].rtt_ns;
        assert!(rtt >= 20e6, "peak taken at once: {rtt}");
        std::thread::sleep(Duration::from_millis(200));
        let l = b.loads.lock().unwrap().by_addr[&eps[0].addr];
        assert!(decayed(&l, Instant::now(), b.decay) < rtt / 5.0, "decays");
    }

    #[test]
    fn open_connections_count_as_load_until_closed() {
        let b = PeakEwma::default();
        let eps = eps(2);
        let (ep, in_flight) = b.pick(&eps).unwrap();
        let busy = ep.addr;
        let open = in_flight.established();
        // Measured and holding a connection: the idle endpoint wins.
        for _ in 0..10 {
            let (ep, _) = b.pick(&eps).unwrap();
            assert_ne!(ep.addr, busy);
        }
        let pending = |b: &PeakEwma| b.loads.lock().unwrap().by_addr[&busy].pending;
        assert_eq!(pending(&b), 1);
        drop(open);
        assert_eq!(pending(&b), 0);
    }

    fn fast_accrual() -> Accrual {
        Accrual {
            max_failures: 3,
            min_penalty: Duration::from_millis(40),
            max_penalty: Duration::from_millis(400),
        }
    }

    #[test]
    fn consecutive_failures_eject_and_a_probe_restores() {
        let b = PeakEwma::default().with_accrual(fast_accrual());
        let eps = eps(2);
        let bad = eps[0].addr;
        // Two failures and a success: the count restarts.
        for ok in [false, false, true, false, false] {
            let (_, f) = b.pick(&eps[..1]).unwrap();
            f.done(ok);
        }
        assert!(b.pick(&eps[..1]).is_ok_and(|(e, f)| {
            f.failed();
            e.addr == bad
        }));
        // Third in a row: ejected. Traffic goes to the other endpoint.
        for _ in 0..50 {
            let (e, f) = b.pick(&eps).unwrap();
            assert_ne!(e.addr, bad);
            f.done(true);
        }
        assert_eq!(b.pick(&eps[..1]).unwrap_err(), Unavailable::AllFailing(1));
        assert_eq!(b.pick(&[]).unwrap_err(), Unavailable::NoEndpoints);
        // After the penalty (40–60 ms) one probe is let through...
        std::thread::sleep(Duration::from_millis(70));
        let (e, probe) = b.pick(&eps[..1]).unwrap();
        assert_eq!(e.addr, bad);
        // ...and only one.
        assert_eq!(b.pick(&eps[..1]).unwrap_err(), Unavailable::AllFailing(1));
        probe.done(true);
        assert!(b.pick(&eps[..1]).is_ok());
    }

    #[test]
    fn failed_probes_double_the_penalty() {
        let b = PeakEwma::default().with_accrual(fast_accrual());
        let eps = eps(1);
        for _ in 0..3 {
            b.pick(&eps).unwrap().1.done(false);
        }
        std::thread::sleep(Duration::from_millis(70));
        b.pick(&eps).unwrap().1.failed();
        let penalty = b.loads.lock().unwrap().by_addr[&eps[0].addr].penalty;
        assert_eq!(penalty, Duration::from_millis(80));
        // Still ejected after the first penalty's length.
        std::thread::sleep(Duration::from_millis(70));
        assert!(b.pick(&eps).is_err());
        // An abandoned probe (client gave up) frees the slot for another.
        std::thread::sleep(Duration::from_millis(80));
        drop(b.pick(&eps).unwrap().1);
        assert!(b.pick(&eps).is_ok());
    }

    #[test]
    fn accrual_can_be_disabled() {
        let b = PeakEwma::default().with_accrual(Accrual {
            max_failures: 0,
            ..fast_accrual()
        });
        let eps = eps(1);
        for _ in 0..20 {
            b.pick(&eps).unwrap().1.done(false);
        }
        assert!(b.pick(&eps).is_ok());
    }
}
