//! The live request feed behind the admin server's `GET /live-requests`,
//! which `weft top` reads: one JSON line per finished response, for a few
//! seconds.
//!
//! It is off unless asked. The metrics layer reads one relaxed atomic per
//! request ([`Live::is_on`]) and, while it is zero, captures nothing: no
//! allocation, no lock. While someone watches, each request's method, path
//! and authority are captured when it arrives and offered to every
//! subscriber when its response ends.
//!
//! Everything is bounded: at most [`MAX_SUBSCRIBERS`] at once, each for at
//! most [`MAX_DURATION`], each with a queue of [`BUFFER`] events and
//! [`MAX_QUEUED_BYTES`], and its own `max_rps` budget; paths and
//! authorities are cut to [`MAX_FIELD_BYTES`]. A subscriber that reads
//! slower than requests end loses events (counted as `dropped`); the data
//! path never waits for it.

use crate::http::body::{self, BoxBody};
use crate::metrics::{Direction, DstLabels, Tls};
use bytes::Bytes;
use http::Request;
use http_body::Frame;
use http_body_util::StreamBody;
use serde::Serialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// Subscribers served at once; one more is refused, so watching can never
/// cost the data path more than this many offers per response.
pub const MAX_SUBSCRIBERS: usize = 4;

/// Events queued per subscriber before new ones are dropped.
pub const BUFFER: usize = 1024;

/// The most a subscriber's queue holds, counting each event by its path
/// and authority (plus a fixed overhead): long URLs cannot turn the
/// queues into megabytes per subscriber.
pub const MAX_QUEUED_BYTES: usize = 1024 * 1024;

/// Paths and authorities longer than this are cut to it: a feed is for
/// seeing traffic, not for replaying it.
pub const MAX_FIELD_BYTES: usize = 8 * 1024;

/// How long a subscription lasts when `duration` is not given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(5);

/// The longest subscription; longer `duration`s are cut to this.
pub const MAX_DURATION: Duration = Duration::from_secs(30);

/// Events per second per subscriber when `max_rps` is not given.
pub const DEFAULT_MAX_RPS: u32 = 100;

/// The highest `max_rps`; higher values are cut to this.
pub const MAX_MAX_RPS: u32 = 1000;

/// How long a subscriber's connection may outlive its `duration` (to read
/// the last lines) before the admin server closes it.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Events written per chunk of the response at most.
const BATCH: usize = 64;

/// The feed's shared state: cheap to clone, shared by the metrics layer
/// (which publishes) and the admin server (which subscribes).
#[derive(Clone, Default)]
pub struct Live(Arc<Shared>);

#[derive(Default)]
struct Shared {
    /// How many subscribers are registered: the only thing the data path
    /// reads when nobody watches.
    active: AtomicUsize,
    subscribers: RwLock<Vec<Arc<Subscriber>>>,
}

/// One subscriber's budget and counters, as the data path sees it.
struct Subscriber {
    tx: mpsc::Sender<Arc<Event>>,
    /// Bytes of the events in `tx`'s queue (see [`Event::weight`]).
    queued: AtomicUsize,
    sample: f64,
    bucket: Mutex<TokenBucket>,
    dropped: AtomicU64,
    sampled_out: AtomicU64,
}

/// `max_rps` as a token bucket: up to one second's worth of events in a
/// burst, refilled at `rate` per second.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

/// A subscription: the response body of one `GET /live-requests`.
/// Dropping it (the client went away) frees its place at once.
pub struct Feed {
    live: Live,
    sub: Arc<Subscriber>,
    rx: mpsc::Receiver<Arc<Event>>,
    deadline: tokio::time::Instant,
    events: u64,
    registered: bool,
}

/// The parameters of `GET /live-requests`.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// How long to stream (at most [`MAX_DURATION`]).
    pub duration: Duration,
    /// The share of responses to pick, from 0 to 1, each by chance.
    pub sample: f64,
    /// Events per second at most (at most [`MAX_MAX_RPS`]).
    pub max_rps: u32,
}

/// Why the query string of `GET /live-requests` was refused (`400`).
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ParamsError {
    /// A parameter the endpoint does not know (likely a typo).
    #[error("unknown parameter {0:?}: expected duration, sample or max_rps")]
    Unknown(String),
    /// The same parameter twice.
    #[error("{0} is given more than once")]
    Repeated(&'static str),
    /// `duration` is not a positive number of seconds.
    #[error(
        "duration={0:?}: expected seconds greater than 0, e.g. 5 or 2.5 (at most 30 are used)"
    )]
    Duration(String),
    /// `sample` is not a fraction.
    #[error("sample={0:?}: expected a fraction from 0 to 1, e.g. 0.1")]
    Sample(String),
    /// `max_rps` is not a positive whole number.
    #[error("max_rps={0:?}: expected a whole number of events per second, at least 1 (at most 1000 are used)")]
    MaxRps(String),
}

/// Why a subscription was refused (`503`).
#[derive(Debug, thiserror::Error)]
#[error(
    "{} live-requests subscribers are already connected (the limit); try again when one ends",
    MAX_SUBSCRIBERS
)]
pub struct Busy;

/// One finished response, as a subscriber receives it. Built only while
/// someone watches: the request half when it arrives, the rest when its
/// response ends.
#[derive(Debug, Serialize)]
pub struct Event {
    ts_unix: f64,
    direction: &'static str,
    client_addr: Option<SocketAddr>,
    #[serde(serialize_with = "opt_str")]
    client_id: Option<Arc<str>>,
    #[serde(serialize_with = "opt_str")]
    server_id: Option<Arc<str>>,
    authority: String,
    #[serde(serialize_with = "dst_map")]
    dst: DstLabels,
    #[serde(serialize_with = "method_str")]
    method: http::Method,
    path: String,
    status: u16,
    #[serde(serialize_with = "to_the_microsecond")]
    latency_ms: f64,
    success: bool,
}

/// The last line of a subscription.
#[derive(Debug, Serialize)]
struct End {
    end: bool,
    events: u64,
    dropped: u64,
    sampled_out: u64,
}

// === impl Live ===

impl Live {
    /// True while someone watches. The only cost of the feed on a request
    /// when nobody does.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.0.active.load(Ordering::Relaxed) != 0
    }

    /// Captures a request as it arrives, if someone watches. `client` is
    /// the connection's peer (inbound), `authority` as the metrics have it.
    #[inline]
    pub fn start<B>(
        &self,
        req: &Request<B>,
        direction: Direction,
        authority: Option<&http::uri::Authority>,
        client: Option<SocketAddr>,
    ) -> Option<Box<Event>> {
        if !self.is_on() {
            return None;
        }
        Some(Event::request(
            req.method(),
            req.uri(),
            direction,
            authority,
            client,
        ))
    }

    /// Offers a finished response to every subscriber: each picks it by
    /// its `sample` and `max_rps`, and queues it if its queue has room.
    pub fn publish(&self, mut event: Box<Event>, success: bool) {
        let subs = self
            .0
            .subscribers
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut picked = [false; MAX_SUBSCRIBERS];
        for (pick, sub) in picked.iter_mut().zip(subs.iter()) {
            *pick = sub.admit();
        }
        if !picked.contains(&true) {
            return;
        }
        event.success = success;
        event.ts_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let event: Arc<Event> = Arc::from(event);
        for (_, sub) in picked.iter().zip(subs.iter()).filter(|(p, _)| **p) {
            sub.offer(event.clone());
        }
    }

    /// Registers a subscriber, unless [`MAX_SUBSCRIBERS`] already are.
    pub fn subscribe(&self, params: &Params) -> Result<Feed, Busy> {
        let (tx, rx) = mpsc::channel(BUFFER);
        let sub = Arc::new(Subscriber {
            tx,
            queued: AtomicUsize::new(0),
            sample: params.sample,
            bucket: Mutex::new(TokenBucket::new(params.max_rps)),
            dropped: AtomicU64::new(0),
            sampled_out: AtomicU64::new(0),
        });
        {
            let mut subs = self
                .0
                .subscribers
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if subs.len() >= MAX_SUBSCRIBERS {
                return Err(Busy);
            }
            subs.push(sub.clone());
            self.0.active.store(subs.len(), Ordering::Relaxed);
        }
        Ok(Feed {
            live: self.clone(),
            sub,
            rx,
            deadline: tokio::time::Instant::now() + params.duration,
            events: 0,
            registered: true,
        })
    }

    /// Subscribers registered now.
    pub fn subscribers(&self) -> usize {
        self.0.active.load(Ordering::Relaxed)
    }

    fn unsubscribe(&self, sub: &Arc<Subscriber>) {
        let mut subs = self
            .0
            .subscribers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        subs.retain(|s| !Arc::ptr_eq(s, sub));
        self.0.active.store(subs.len(), Ordering::Relaxed);
    }
}

// === impl Subscriber ===

impl Subscriber {
    /// Picks an event or not, counting why not.
    fn admit(&self) -> bool {
        if self.sample < 1.0 && fastrand::f64() >= self.sample {
            self.sampled_out.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let allowed = self
            .bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(Instant::now());
        if !allowed {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }

    /// Queues a picked event; a full queue drops it.
    fn offer(&self, event: Arc<Event>) {
        let weight = event.weight();
        if self.queued.fetch_add(weight, Ordering::Relaxed) + weight > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(weight, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Err(error) = self.tx.try_send(event) {
            self.queued.fetch_sub(weight, Ordering::Relaxed);
            if let mpsc::error::TrySendError::Full(_) = error {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

// === impl TokenBucket ===

impl TokenBucket {
    fn new(max_rps: u32) -> Self {
        let rate = f64::from(max_rps.max(1));
        Self {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

// === impl Feed ===

impl Feed {
    /// The NDJSON response body: events as they come, then at the
    /// deadline those still queued and the `{"end":true,...}` line.
    pub fn into_body(self) -> BoxBody {
        let chunks = futures::stream::unfold(self, |mut feed| async move {
            let chunk = feed.next_chunk().await?;
            Some((Ok::<_, Infallible>(Frame::data(chunk)), feed))
        });
        body::boxed(StreamBody::new(chunks))
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        if !self.registered {
            return None;
        }
        let mut batch = Vec::with_capacity(BATCH);
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(self.deadline) => {}
            n = self.rx.recv_many(&mut batch, BATCH) => {
                // The sender lives as long as `self.sub`: 0 cannot happen.
                if n > 0 {
                    return Some(self.encode(&batch, Vec::new()).into());
                }
            }
        }
        // Over: stop taking events, then flush what was already picked.
        self.unregister();
        self.rx.close();
        while let Ok(event) = self.rx.try_recv() {
            batch.push(event);
        }
        let mut out = self.encode(&batch, Vec::new());
        let end = End {
            end: true,
            events: self.events,
            dropped: self.sub.dropped.load(Ordering::Relaxed),
            sampled_out: self.sub.sampled_out.load(Ordering::Relaxed),
        };
        line(&mut out, &end);
        tracing::debug!(?end, "live-requests subscription ended");
        Some(out.into())
    }

    fn encode(&mut self, events: &[Arc<Event>], mut out: Vec<u8>) -> Vec<u8> {
        let weight: usize = events.iter().map(|e| e.weight()).sum();
        self.sub.queued.fetch_sub(weight, Ordering::Relaxed);
        for event in events {
            if line(&mut out, &**event) {
                self.events += 1;
            }
        }
        out
    }

    fn unregister(&mut self) {
        if std::mem::replace(&mut self.registered, false) {
            self.live.unsubscribe(&self.sub);
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// Appends `value` as one JSON line; false (logged) if it cannot be
/// written, which our plain types never cause.
fn line(out: &mut Vec<u8>, value: &impl Serialize) -> bool {
    let len = out.len();
    match serde_json::to_writer(&mut *out, value) {
        Ok(()) => {
            out.push(b'\n');
            true
        }
        Err(error) => {
            out.truncate(len);
            tracing::debug!(%error, "cannot encode a live-requests line");
            false
        }
    }
}

// === impl Params ===

impl Default for Params {
    fn default() -> Self {
        Self {
            duration: DEFAULT_DURATION,
            sample: 1.0,
            max_rps: DEFAULT_MAX_RPS,
        }
    }
}

impl Params {
    /// Parses the query string (absent: every default).
    pub fn from_query(query: Option<&str>) -> Result<Self, ParamsError> {
        let mut params = Self::default();
        let mut seen = [false; 3];
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let (slot, name) = match &*key {
                "duration" => (0, "duration"),
                "sample" => (1, "sample"),
                "max_rps" => (2, "max_rps"),
                _ => return Err(ParamsError::Unknown(key.into_owned())),
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(ParamsError::Repeated(name));
            }
            match slot {
                0 => {
                    params.duration = value
                        .parse::<f64>()
                        .ok()
                        .filter(|s| s.is_finite() && *s > 0.0)
                        .map(|s| Duration::from_secs_f64(s.min(MAX_DURATION.as_secs_f64())))
                        .ok_or_else(|| ParamsError::Duration(value.into_owned()))?;
                }
                1 => {
                    params.sample = value
                        .parse::<f64>()
                        .ok()
                        .filter(|s| (0.0..=1.0).contains(s))
                        .ok_or_else(|| ParamsError::Sample(value.into_owned()))?;
                }
                _ => {
                    params.max_rps = value
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .map(|n| n.min(u64::from(MAX_MAX_RPS)) as u32)
                        .ok_or_else(|| ParamsError::MaxRps(value.into_owned()))?;
                }
            }
        }
        Ok(params)
    }
}

// === impl Event ===

impl Event {
    /// The request half: what is known when it arrives.
    fn request(
        method: &http::Method,
        uri: &http::Uri,
        direction: Direction,
        authority: Option<&http::uri::Authority>,
        client: Option<SocketAddr>,
    ) -> Box<Self> {
        Box::new(Event {
            ts_unix: 0.0,
            direction: direction.as_str(),
            client_addr: client,
            client_id: None,
            server_id: None,
            authority: authority.map_or_else(String::new, |a| cut(a.as_str()).to_owned()),
            dst: DstLabels::default(),
            method: method.clone(),
            path: cut(uri.path()).to_owned(),
            status: 0,
            latency_ms: 0.0,
            success: false,
        })
    }

    /// What the event counts for in a subscriber's queue.
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>() + self.path.len() + self.authority.len()
    }

    /// Adds what is known once the response head is: the TLS status (and
    /// peer identity), the destination's labels, the status and latency.
    pub fn responded(&mut self, tls: &Tls, dst: &DstLabels, status: u16, latency_ms: f64) {
        match tls {
            Tls::Client(id) => self.client_id = Some(id.clone()),
            Tls::Server(id) => self.server_id = Some(id.clone()),
            Tls::Disabled | Tls::NoIdentity | Tls::Passthru => {}
        }
        self.dst = dst.clone();
        self.status = status;
        self.latency_ms = latency_ms;
    }
}

/// `s` cut to at most [`MAX_FIELD_BYTES`], on a character boundary.
fn cut(s: &str) -> &str {
    let mut end = s.len().min(MAX_FIELD_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn opt_str<S: serde::Serializer>(v: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(v),
        None => s.serialize_none(),
    }
}

fn to_the_microsecond<S: serde::Serializer>(ms: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((ms * 1e3).round() / 1e3)
}

fn method_str<S: serde::Serializer>(m: &http::Method, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

/// `dst` is the discovery labels without their `dst_` prefix, `{}` when
/// there are none.
fn dst_map<S: serde::Serializer>(dst: &DstLabels, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let labels = dst.0.as_deref().unwrap_or_default();
    let mut map = s.serialize_map(Some(labels.len()))?;
    for (k, v) in labels {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Result<Params, ParamsError> {
        Params::from_query(Some(q))
    }

    #[test]
    fn parameters_default_cap_and_refuse() {
        assert_eq!(Params::from_query(None).unwrap(), Params::default());
        let p = params("duration=2.5&sample=0.25&max_rps=10").unwrap();
        assert_eq!(
            (p.duration, p.sample, p.max_rps),
            (Duration::from_millis(2500), 0.25, 10)
        );
        let p = params("duration=3600&max_rps=99999").unwrap();
        assert_eq!((p.duration, p.max_rps), (MAX_DURATION, MAX_MAX_RPS));
        for (q, want) in [
            ("duration=0", ParamsError::Duration("0".into())),
            ("duration=5s", ParamsError::Duration("5s".into())),
            ("duration=inf", ParamsError::Duration("inf".into())),
            ("sample=1.5", ParamsError::Sample("1.5".into())),
            ("sample=-0.1", ParamsError::Sample("-0.1".into())),
            ("sample=NaN", ParamsError::Sample("NaN".into())),
            ("max_rps=0", ParamsError::MaxRps("0".into())),
            ("max_rps=2.5", ParamsError::MaxRps("2.5".into())),
            ("max-rps=5", ParamsError::Unknown("max-rps".into())),
            ("sample=1&sample=1", ParamsError::Repeated("sample")),
        ] {
            assert_eq!(params(q), Err(want), "{q}");
        }
    }

    #[test]
    fn token_bucket_allows_a_second_of_burst_then_the_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::new(5);
        b.last = start;
        let burst = (0..20).filter(|_| b.take(start)).count();
        assert_eq!(burst, 5);
        let later = start + Duration::from_millis(400);
        assert_eq!((0..20).filter(|_| b.take(later)).count(), 2);
    }

    #[test]
    fn events_are_json_lines_with_dst_without_prefix() {
        let live = Live::default();
        let req = Request::get("http://books:8080/books/7?secret=1")
            .body(())
            .unwrap();
        assert!(
            live.start(&req, Direction::Outbound, None, None).is_none(),
            "nothing is captured while nobody watches"
        );
        let mut feed = live.subscribe(&Params::default()).unwrap();
        let authority = req.uri().authority().cloned();
        let mut ev = live
            .start(&req, Direction::Outbound, authority.as_ref(), None)
            .unwrap();
        let dst = DstLabels(Some(
            vec![
                ("namespace".to_string(), "demo".to_string()),
                ("service".to_string(), "books".to_string()),
            ]
            .into(),
        ));
        ev.responded(&Tls::Server("books.demo".into()), &dst, 503, 1.54663);
        live.publish(ev, false);
        let got = feed.rx.try_recv().unwrap();
        let json: serde_json::Value = serde_json::to_value(&*got).unwrap();
        assert_eq!(json["direction"], "outbound");
        assert_eq!(json["path"], "/books/7");
        assert_eq!(json["method"], "GET");
        assert_eq!(json["authority"], "books:8080");
        assert_eq!(json["server_id"], "books.demo");
        assert_eq!(json["client_id"], serde_json::Value::Null);
        assert_eq!(json["client_addr"], serde_json::Value::Null);
        assert_eq!(json["latency_ms"], 1.547);
        assert_eq!(
            json["dst"],
            serde_json::json!({"namespace": "demo", "service": "books"})
        );
        assert_eq!(
            (json["status"].as_u64(), json["success"].as_bool()),
            (Some(503), Some(false))
        );
        drop(feed);
        assert!(!live.is_on(), "a dropped feed unregisters");
    }

    #[test]
    fn long_fields_are_cut_and_queues_are_bounded_in_bytes() {
        let live = Live::default();
        let params = Params {
            max_rps: MAX_MAX_RPS,
            ..Params::default()
        };
        let mut feed = live.subscribe(&params).unwrap();
        let long = format!("/{}", "é".repeat(MAX_FIELD_BYTES));
        let req = Request::get(&*long).body(()).unwrap();
        for _ in 0..200 {
            let mut ev = live.start(&req, Direction::Inbound, None, None).unwrap();
            assert!(ev.path.len() <= MAX_FIELD_BYTES && ev.path.len() > MAX_FIELD_BYTES - 4);
            ev.responded(&Tls::Disabled, &DstLabels::default(), 200, 1.0);
            live.publish(ev, true);
        }
        let mut queued = Vec::new();
        while let Ok(ev) = feed.rx.try_recv() {
            queued.push(ev);
        }
        let weight = queued[0].weight();
        assert_eq!(queued.len(), MAX_QUEUED_BYTES / weight);
        assert_eq!(
            feed.sub.dropped.load(Ordering::Relaxed) as usize,
            200 - queued.len()
        );
        feed.encode(&queued, Vec::new());
        assert_eq!(
            feed.sub.queued.load(Ordering::Relaxed),
            0,
            "written: not queued"
        );
    }

    #[test]
    fn at_most_four_subscribers() {
        let live = Live::default();
        let feeds: Vec<Feed> = (0..MAX_SUBSCRIBERS)
            .map(|_| live.subscribe(&Params::default()).unwrap())
            .collect();
        assert!(live.subscribe(&Params::default()).is_err());
        drop(feeds);
        assert_eq!(live.subscribers(), 0);
        assert!(live.subscribe(&Params::default()).is_ok());
    }
}
