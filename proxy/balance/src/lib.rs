//! Power of two choices over peak-EWMA load: the endpoint choice of one
//! backend (`weft-proxy`'s outbound stack builds one [`PeakEwma`] per
//! concrete target).
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
//!
//! The balancer knows an endpoint only by its address (see [`Endpoint`]),
//! and all time is `tokio::time`, so every behaviour here is testable with
//! paused time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Load estimates are dropped this long after their endpoint's last use,
/// so the table does not grow with endpoints that have gone away.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// What the balancer needs to know of an endpoint: its address (the key of its load state).
pub trait Endpoint {
    /// The address this endpoint's load and failures are tracked under:
    /// endpoints with the same address share one estimate, even across
    /// discovery updates that rebuild the endpoint list.
    fn addr(&self) -> SocketAddr;
}

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
    /// A balancer with this RTT for endpoints not yet measured and this
    /// decay of estimates (Linkerd's defaults, 30 ms and 10 s, are
    /// [`PeakEwma::default`]).
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
    pub fn pick<'a, E: Endpoint>(
        &self,
        endpoints: &'a [E],
    ) -> Result<(&'a E, InFlight), Unavailable> {
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
        let usable = |ep: &E| loads.by_addr.get(&ep.addr()).is_none_or(|l| l.usable(now));
        let chosen = if endpoints.iter().all(usable) {
            self.choose(&loads, endpoints.len(), |i| &endpoints[i], now)
        } else {
            let eligible: Vec<&E> = endpoints.iter().filter(|e| usable(e)).collect();
            if eligible.is_empty() {
                return Err(Unavailable::AllFailing(endpoints.len()));
            }
            self.choose(&loads, eligible.len(), |i| eligible[i], now)
        };
        let addr = chosen.addr();
        let default = self.default_rtt.as_nanos() as f64;
        let load = loads.by_addr.entry(addr).or_insert(Load {
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
                addr,
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
    fn choose<'a, E: Endpoint>(
        &self,
        loads: &Loads,
        n: usize,
        at: impl Fn(usize) -> &'a E,
        now: Instant,
    ) -> &'a E {
        match n {
            1 => at(0),
            n if self.strategy == Strategy::RoundRobin => {
                at(self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n)
            }
            n => {
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                let (ea, eb) = (at(a), at(b));
                if self.cost(loads, ea.addr(), now) <= self.cost(loads, eb.addr(), now) {
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

// === impl Open ===

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
    use tokio::time::advance;

    /// A test endpoint: an address and nothing else.
    #[derive(Debug)]
    struct Ep(SocketAddr);

    impl Endpoint for Ep {
        fn addr(&self) -> SocketAddr {
            self.0
        }
    }

    fn eps(n: u16) -> Vec<Ep> {
        (0..n)
            .map(|i| Ep(SocketAddr::from(([10, 0, 0, 1], 1000 + i))))
            .collect()
    }

    fn other() -> Vec<Ep> {
        vec![Ep(SocketAddr::from(([10, 0, 0, 9], 9)))]
    }

    const MS: Duration = Duration::from_millis(1);

    /// A copy of the balancer's load state for `ep`.
    fn load(b: &PeakEwma, ep: &Ep) -> Load {
        b.loads.lock().unwrap().by_addr[&ep.0]
    }

    fn known(b: &PeakEwma, ep: &Ep) -> bool {
        b.loads.lock().unwrap().by_addr.contains_key(&ep.0)
    }

    /// Teaches the balancer that `ep` answered in `rtt` and has `pending`
    /// requests in flight.
    fn teach(b: &PeakEwma, ep: &Ep, rtt: Duration, pending: u32) {
        b.loads.lock().unwrap().by_addr.insert(
            ep.0,
            Load {
                rtt_ns: rtt.as_nanos() as f64,
                updated: Instant::now(),
                pending,
                measured: true,
                failures: 0,
                ejected_until: None,
                penalty: Duration::ZERO,
                probing: false,
            },
        );
    }

    fn assert_close(got: f64, want: f64) {
        assert!(
            (got - want).abs() <= want.abs() * 1e-9,
            "got {got}, want {want}"
        );
    }

    fn fast_accrual() -> Accrual {
        Accrual {
            max_failures: 3,
            min_penalty: 40 * MS,
            max_penalty: 400 * MS,
        }
    }

    /// Fails `ep` until it is ejected (three failures with `fast_accrual`).
    fn eject(b: &PeakEwma, ep: &[Ep]) {
        for _ in 0..b.accrual.max_failures {
            b.pick(ep).unwrap().1.done(false);
        }
        assert_eq!(b.pick(ep).unwrap_err(), Unavailable::AllFailing(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_endpoint_gets_no_picks() {
        let b = PeakEwma::default();
        let eps = eps(3);
        // Endpoint 0 answered in 50 ms, the others in 1 ms.
        teach(&b, &eps[0], 50 * MS, 0);
        teach(&b, &eps[1], MS, 0);
        teach(&b, &eps[2], MS, 0);
        let mut slow = 0;
        for _ in 0..3000 {
            let (ep, inflight) = b.pick(&eps).unwrap();
            slow += (ep.0 == eps[0].0) as u32;
            drop(inflight);
        }
        // P2C only picks the slow one when both draws are it: never, with
        // distinct draws among 3.
        assert_eq!(slow, 0, "slow endpoint picked {slow} times of 3000");
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_requests_spread_load() {
        let b = PeakEwma::default();
        let eps = eps(2);
        let (first, _a) = b.pick(&eps).unwrap();
        // With one request pending on `first`, the other costs less.
        let (second, _b) = b.pick(&eps).unwrap();
        assert_ne!(second.0, first.0);
        assert_eq!(load(&b, first).pending, 1);
        assert_eq!(load(&b, second).pending, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_endpoint_is_tried_at_once() {
        let b = PeakEwma::default();
        let mut eps = eps(1);
        // One fast (1 ms), measured endpoint...
        for _ in 0..10 {
            let (_, f) = b.pick(&eps).unwrap();
            advance(MS).await;
            f.done(true);
        }
        // ...and a scale-up: the newcomer is picked while unmeasured...
        eps.push(Ep(SocketAddr::from(([10, 0, 0, 2], 1))));
        let (ep, _f) = b.pick(&eps).unwrap();
        assert_eq!(ep.0, eps[1].0);
        // ...but not flooded: with a request out, it costs the default RTT.
        for _ in 0..10 {
            let (ep, _) = b.pick(&eps).unwrap();
            assert_eq!(ep.0, eps[0].0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_slow_requests_raise_the_estimate_fast_failures_do_not() {
        let b = PeakEwma::default();
        let eps = eps(1);
        let (_, f) = b.pick(&eps).unwrap();
        advance(MS).await;
        f.done(true);
        let before = load(&b, &eps[0]).rtt_ns;
        assert_eq!(before, 1e6);
        // A fast failure (dropped at once, or refused) leaves it alone...
        drop(b.pick(&eps).unwrap().1);
        b.pick(&eps).unwrap().1.failed();
        assert_eq!(load(&b, &eps[0]).rtt_ns, before);
        // ...and does not make a new endpoint look measured and fast.
        let fresh = other();
        drop(b.pick(&fresh).unwrap().1);
        b.pick(&fresh).unwrap().1.failed();
        assert!(!load(&b, &fresh[0]).measured);
        // A request abandoned after a long wait raises it, at once.
        let (_, f) = b.pick(&eps).unwrap();
        advance(30 * MS).await;
        drop(f);
        assert_eq!(load(&b, &eps[0]).rtt_ns, 30e6);
        // So does a slow failure.
        let (_, f) = b.pick(&eps).unwrap();
        advance(40 * MS).await;
        f.failed();
        assert_eq!(load(&b, &eps[0]).rtt_ns, 40e6);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unmeasured_endpoint_is_slow_only_beyond_the_default() {
        let b = PeakEwma::default();
        let eps = eps(1);
        // Abandoned within the default RTT (30 ms): proves nothing.
        let (_, f) = b.pick(&eps).unwrap();
        advance(20 * MS).await;
        drop(f);
        assert!(!load(&b, &eps[0]).measured);
        // Abandoned beyond it: the endpoint is slow.
        let (_, f) = b.pick(&eps).unwrap();
        advance(40 * MS).await;
        drop(f);
        let l = load(&b, &eps[0]);
        assert!(l.measured);
        assert_eq!(l.rtt_ns, 40e6);
    }

    #[tokio::test(start_paused = true)]
    async fn peak_then_decay() {
        let b = PeakEwma::new(MS, 100 * MS);
        let eps = eps(1);
        let (_, f) = b.pick(&eps).unwrap();
        advance(20 * MS).await;
        f.done(true);
        // The peak is taken at once.
        let rtt = load(&b, &eps[0]).rtt_ns;
        assert_eq!(rtt, 20e6);
        // Two decay periods later: e^-2 of it.
        advance(200 * MS).await;
        let got = decayed(&load(&b, &eps[0]), Instant::now(), b.decay);
        assert_close(got, 20e6 * (-2.0f64).exp());
        assert!(got < rtt / 5.0);
        // Cost is the decayed estimate × (in flight + 1).
        let loads = b.loads.lock().unwrap();
        assert_close(b.cost(&loads, eps[0].0, Instant::now()), got);
    }

    #[tokio::test(start_paused = true)]
    async fn faster_samples_pull_the_estimate_down() {
        let b = PeakEwma::new(MS, 100 * MS);
        let eps = eps(1);
        let (_, f) = b.pick(&eps).unwrap();
        advance(20 * MS).await;
        f.done(true);
        // 85 ms after that sample, a 5 ms one.
        advance(80 * MS).await;
        let (_, f) = b.pick(&eps).unwrap();
        advance(5 * MS).await;
        f.done(true);
        let w = (-0.85f64).exp();
        let current = 20e6 * w;
        let got = load(&b, &eps[0]).rtt_ns;
        assert_close(got, current * w + 5e6 * (1.0 - w));
        assert!(5e6 < got && got < current, "moved toward the sample: {got}");
    }

    #[tokio::test(start_paused = true)]
    async fn open_connections_count_as_load_until_closed() {
        let b = PeakEwma::default();
        let eps = eps(2);
        let (ep, in_flight) = b.pick(&eps).unwrap();
        let busy = ep.0;
        // Connected in 2 ms: that is the RTT sample.
        advance(2 * MS).await;
        let open = in_flight.established();
        let pending = |b: &PeakEwma| b.loads.lock().unwrap().by_addr[&busy].pending;
        assert_eq!(b.loads.lock().unwrap().by_addr[&busy].rtt_ns, 2e6);
        assert_eq!(pending(&b), 1);
        // Measured and holding a connection: the idle endpoint wins.
        for _ in 0..10 {
            let (ep, _) = b.pick(&eps).unwrap();
            assert_ne!(ep.0, busy);
        }
        assert_eq!(pending(&b), 1);
        drop(open);
        assert_eq!(pending(&b), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_and_a_probe_restores() {
        let b = PeakEwma::default().with_accrual(fast_accrual());
        let eps = eps(2);
        let bad = eps[0].0;
        // Two failures and a success: the count restarts.
        for ok in [false, false, true, false, false] {
            let (_, f) = b.pick(&eps[..1]).unwrap();
            f.done(ok);
        }
        assert!(b.pick(&eps[..1]).is_ok_and(|(e, f)| {
            f.failed();
            e.0 == bad
        }));
        // Third in a row: ejected. Traffic goes to the other endpoint.
        for _ in 0..50 {
            let (e, f) = b.pick(&eps).unwrap();
            assert_ne!(e.0, bad);
            f.done(true);
        }
        assert_eq!(b.pick(&eps[..1]).unwrap_err(), Unavailable::AllFailing(1));
        assert_eq!(b.pick::<Ep>(&[]).unwrap_err(), Unavailable::NoEndpoints);
        // The penalty is 40–60 ms: still ejected just before 40...
        advance(39 * MS).await;
        assert_eq!(b.pick(&eps[..1]).unwrap_err(), Unavailable::AllFailing(1));
        // ...and after 60 one probe is let through...
        advance(21 * MS).await;
        let (e, probe) = b.pick(&eps[..1]).unwrap();
        assert_eq!(e.0, bad);
        // ...and only one.
        assert_eq!(b.pick(&eps[..1]).unwrap_err(), Unavailable::AllFailing(1));
        probe.done(true);
        let l = load(&b, &eps[0]);
        assert_eq!((l.failures, l.ejected_until, l.probing), (0, None, false));
        // Back in rotation, for more than one request at a time.
        let (_, _a) = b.pick(&eps[..1]).unwrap();
        let (_, _b) = b.pick(&eps[..1]).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probes_double_the_penalty_up_to_the_max() {
        let b = PeakEwma::default().with_accrual(fast_accrual());
        let eps = eps(1);
        eject(&b, &eps);
        assert_eq!(load(&b, &eps[0]).penalty, 40 * MS);
        let mut penalty = 40 * MS;
        for want in [80, 160, 320, 400, 400] {
            // Ejected for the penalty at least, with up to half again.
            advance(penalty - MS).await;
            assert_eq!(b.pick(&eps).unwrap_err(), Unavailable::AllFailing(1));
            advance(penalty / 2 + MS).await;
            b.pick(&eps).unwrap().1.failed();
            penalty = load(&b, &eps[0]).penalty;
            assert_eq!(penalty, want * MS);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_frees_the_slot() {
        let b = PeakEwma::default().with_accrual(fast_accrual());
        let eps = eps(1);
        eject(&b, &eps);
        advance(60 * MS).await;
        let (_, probe) = b.pick(&eps).unwrap();
        assert!(b.pick(&eps).is_err());
        // The client gave up: that proves nothing, so another may probe.
        drop(probe);
        let l = load(&b, &eps[0]);
        assert!(l.ejected_until.is_some() && !l.probing);
        let (_, probe) = b.pick(&eps).unwrap();
        assert!(b.pick(&eps).is_err());
        probe.done(true);
        assert!(b.pick(&eps).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn accrual_can_be_disabled() {
        let b = PeakEwma::default().with_accrual(Accrual {
            max_failures: 0,
            ..fast_accrual()
        });
        let eps = eps(1);
        for _ in 0..20 {
            b.pick(&eps).unwrap().1.done(false);
        }
        assert!(b.pick(&eps).is_ok());
        let l = load(&b, &eps[0]);
        assert_eq!((l.failures, l.ejected_until), (20, None));
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_shares_settings_not_load_state() {
        let b = PeakEwma::new(5 * MS, Duration::from_secs(1))
            .with_strategy(Strategy::RoundRobin)
            .with_accrual(fast_accrual());
        let eps = eps(3);
        let (first, _a) = b.pick(&eps).unwrap();
        let (second, _b) = b.pick(&eps).unwrap();
        assert_eq!((first.0, second.0), (eps[0].0, eps[1].0));
        let f = b.fresh();
        assert_eq!(
            (f.default_rtt, f.decay, f.strategy, f.accrual),
            (b.default_rtt, b.decay, b.strategy, b.accrual)
        );
        assert!(!Arc::ptr_eq(&f.loads, &b.loads));
        assert!(f.loads.lock().unwrap().by_addr.is_empty());
        // Its own turn, too: it starts at the first endpoint.
        let (ep, f_in_flight) = f.pick(&eps).unwrap();
        assert_eq!(ep.0, eps[0].0);
        assert_eq!(load(&b, &eps[0]).pending, 1);
        assert!(!known(&f, &eps[1]));
        // Its failures are its own: ejected there, not here.
        drop(f_in_flight);
        eject(&f, &eps[2..]);
        assert!(b.pick(&eps[2..]).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn round_robin_takes_each_endpoint_in_turn() {
        let b = PeakEwma::default()
            .with_strategy(Strategy::RoundRobin)
            .with_accrual(fast_accrual());
        let eps = eps(3);
        // Regardless of load: endpoint 0 is slow and busy.
        teach(&b, &eps[0], Duration::from_secs(1), 5);
        let picked: Vec<_> = (0..7)
            .map(|_| {
                let (ep, f) = b.pick(&eps).unwrap();
                f.done(true);
                ep.0
            })
            .collect();
        let want: Vec<_> = [0, 1, 2, 0, 1, 2, 0].map(|i| eps[i].0).to_vec();
        assert_eq!(picked, want);
        // An ejected endpoint is skipped: the others alternate.
        eject(&b, &eps[1..2]);
        let mut counts = [0; 3];
        for _ in 0..4 {
            let (ep, f) = b.pick(&eps).unwrap();
            counts[eps.iter().position(|e| e.0 == ep.0).unwrap()] += 1;
            f.done(true);
        }
        assert_eq!(counts, [2, 0, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn least_loaded_ignores_rtt() {
        let eps = eps(2);
        // Endpoint 0 is slow and idle, endpoint 1 fast with one request out.
        let pick_all = |strategy| {
            let b = PeakEwma::default().with_strategy(strategy);
            teach(&b, &eps[0], 50 * MS, 0);
            teach(&b, &eps[1], MS, 1);
            (0..20)
                .map(|_| b.pick(&eps).unwrap().0 .0)
                .collect::<std::collections::HashSet<_>>()
        };
        // Fewest in flight wins...
        assert_eq!(pick_all(Strategy::LeastLoaded), [eps[0].0].into());
        // ...where peak-EWMA weighs in the RTT: 50 ms × 1 > 1 ms × 2.
        assert_eq!(pick_all(Strategy::PeakEwma), [eps[1].0].into());
    }

    #[tokio::test(start_paused = true)]
    async fn endpoints_unused_for_a_while_are_forgotten() {
        let b = PeakEwma::default().with_accrual(fast_accrual());
        let eps = eps(5);
        let [a, bb, c, d, e] = [0, 1, 2, 3, 4].map(|i| &eps[i..i + 1]);
        // At 0 s: `a` answers, `c` has a request out, `d` is ejected.
        b.pick(a).unwrap().1.done(true);
        let (_, _c) = b.pick(c).unwrap();
        eject(&b, d);
        // At 300 s: `b` answers.
        advance(Duration::from_secs(300)).await;
        b.pick(bb).unwrap().1.done(true);
        assert!(known(&b, &a[0]));
        // At 601 s, the next pick sweeps: `a` is gone, unused for 601 s;
        // `b` was used 301 s ago, `c` is busy and `d` ejected.
        advance(Duration::from_secs(301)).await;
        b.pick(e).unwrap().1.done(true);
        assert!(!known(&b, &a[0]));
        for ep in [&bb[0], &c[0], &d[0], &e[0]] {
            assert!(known(&b, ep), "{:?} kept", ep.0);
        }
        // Forgotten means unmeasured: it is tried as if new.
        b.pick(a).unwrap();
        assert!(!load(&b, &a[0]).measured);
    }

    #[test]
    fn strategies_parse() {
        assert_eq!("peak-ewma".parse(), Ok(Strategy::PeakEwma));
        assert_eq!(" least-loaded\n".parse(), Ok(Strategy::LeastLoaded));
        assert_eq!("round-robin".parse(), Ok(Strategy::RoundRobin));
        let err = "random".parse::<Strategy>().unwrap_err();
        assert!(err.contains("\"random\""), "{err}");
        assert_eq!(Strategy::default(), Strategy::PeakEwma);
    }

    #[test]
    fn defaults_are_linkerds() {
        let b = PeakEwma::default();
        assert_eq!((b.default_rtt, b.decay), (30 * MS, Duration::from_secs(10)));
        assert_eq!(b.strategy, Strategy::PeakEwma);
        assert_eq!(
            b.accrual,
            Accrual {
                max_failures: 7,
                min_penalty: Duration::from_secs(1),
                max_penalty: Duration::from_secs(60),
            }
        );
    }
}
