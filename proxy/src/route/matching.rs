//! Which policy-API HTTP route a request is on: Linkerd's
//! `http_route::{HttpRouteMatch, HostMatch}` compiled once per update and
//! evaluated per request with the Gateway API semantics Linkerd's proxy
//! implements. Both sides use this one matcher: the outbound policy
//! (`discovery::policy`, TrafficSplits with `matches`) and the inbound
//! authorization policy (`inbound::policy`), so a route means the same on
//! either side of a connection.
//!
//! A route applies when one of its hosts matches (or it has none) and one
//! of its rules does; a rule matches when any of its matches does (or it
//! has none). A match holds when all its parts do: the method; the path
//! (exact, prefix by whole segments, or a regex that must match the
//! **whole** path); every header (exact bytes, or a regex over the whole
//! value); every query parameter. [`route_score`] says how well: the more
//! specific host, then the longer path match, then a method, then more
//! headers, then more query parameters ([`Score`]); ties go to the earlier
//! rule and match. The inbound side reports the best-scoring route; the
//! outbound side takes the first rule that matches at all.
//!
//! Nothing here allocates per request unless a route matches on query
//! parameters that need decoding.

use http::header::{HeaderName, HeaderValue};
use linkerd2_proxy_api::http_route::{self as api, header_match, path_match, query_param_match};
use regex::Regex;

/// Hosts a route is limited to.
#[derive(Clone, Debug)]
pub enum HostMatch {
    /// Exactly this host (case-insensitive).
    Exact(String),
    /// `*.example.com`, as reversed labels (`com`, `example`).
    Suffix(Vec<String>),
}

/// One match of a rule: all set parts must hold.
#[derive(Debug, Default)]
pub struct RequestMatch {
    method: Option<http::Method>,
    path: Option<PathMatch>,
    headers: Box<[HeaderMatch]>,
    query: Box<[QueryMatch]>,
}

#[derive(Debug)]
enum PathMatch {
    Exact(String),
    /// Whole segments: `/a` matches `/a` and `/a/b`, not `/ab`.
    Prefix(String),
    /// Anchored at both ends when compiled.
    Regex(Regex),
}

#[derive(Debug)]
struct HeaderMatch {
    name: HeaderName,
    value: ValueMatch<HeaderValue>,
}

#[derive(Debug)]
struct QueryMatch {
    name: String,
    value: ValueMatch<String>,
}

#[derive(Debug)]
enum ValueMatch<T> {
    Exact(T),
    Regex(Regex),
}

/// How specifically a request matched a route; greater is better, so the
/// inbound side can report the best of several matching routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Score {
    host: Option<HostScore>,
    path: usize,
    method: bool,
    headers: usize,
    query: usize,
}

/// A host match's specificity: any exact match beats any suffix match,
/// longer beats shorter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum HostScore {
    Suffix(usize),
    Exact(usize),
}

/// The parts of a request that routes match on, borrowed so that matching
/// copies nothing.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a http::Method,
    /// The URI (path and query).
    pub uri: &'a http::Uri,
    /// The headers.
    pub headers: &'a http::HeaderMap,
}

/// Why a match could not be compiled (each side decides what that costs:
/// outbound drops the rule, inbound refuses the policy).
#[derive(Debug, thiserror::Error)]
pub enum InvalidMatch {
    /// A path match without a kind.
    #[error("a path match without a value")]
    MissingPath,
    /// A regex that does not compile.
    #[error("invalid regex {regex:?}: {source}")]
    Regex {
        /// The regex as sent.
        regex: String,
        /// What the parser said.
        source: regex::Error,
    },
    /// A header name that is not a token.
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    /// An exact header value that is not a valid value.
    #[error("invalid value for header {0:?}")]
    HeaderValue(String),
    /// A header or query match without a value.
    #[error("a match on {0:?} without a value")]
    MissingValue(String),
    /// A query parameter match without a name.
    #[error("a query parameter match without a name")]
    QueryName,
    /// A method that is not a method.
    #[error("invalid method: {0}")]
    Method(String),
}

/// Compiles `re` to match whole values only (`^(?:re)$`): a path regex
/// `/api` must not admit `/api/admin` nor `/x/api`. (The controller
/// anchors already; anchoring twice changes nothing.)
fn anchored(re: &str) -> Result<Regex, InvalidMatch> {
    Regex::new(&format!("^(?:{re})$")).map_err(|source| InvalidMatch::Regex {
        regex: re.to_owned(),
        source,
    })
}

/// How well a request for `host` (see [`request_host`]) matches a route
/// limited to `hosts` (empty: any host) whose rules have the given
/// matches, or `None` if it is not on the route. A rule without matches
/// matches every request, as the prefix `/` does; of equal scores the
/// earlier rule's counts.
pub fn route_score<'m>(
    hosts: &[HostMatch],
    rules: impl IntoIterator<Item = &'m [RequestMatch]>,
    req: &RequestHead<'_>,
    host: Option<&str>,
) -> Option<Score> {
    let host_score = if hosts.is_empty() {
        None
    } else {
        let host = host?;
        Some(first_max(hosts.iter().filter_map(|h| h.score(host)))?)
    };
    let best = first_max(rules.into_iter().filter_map(|matches| {
        if matches.is_empty() {
            return Some(Score::ROOT);
        }
        first_max(matches.iter().filter_map(|m| m.score(req)))
    }))?;
    Some(Score {
        host: host_score,
        ..best
    })
}

/// The host a request is for: the URI's (HTTP/2, absolute-form HTTP/1),
/// else the `Host` header's, without the port. Computed once per request
/// and handed to [`route_score`] for every route.
pub fn request_host<'a>(uri: &'a http::Uri, headers: &'a http::HeaderMap) -> Option<&'a str> {
    if let Some(host) = uri.host() {
        return Some(host);
    }
    let value = headers.get(http::header::HOST)?.to_str().ok()?;
    // `host[:port]`, or `[v6]:port`.
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split_once(']').map(|(h, _)| h);
    }
    Some(value.rsplit_once(':').map_or(value, |(h, _)| h))
}

/// The greatest item, the first of equals (so earlier rules and matches
/// win ties, as the controller orders them).
fn first_max<T: Ord>(items: impl Iterator<Item = T>) -> Option<T> {
    items.reduce(|a, b| if a >= b { a } else { b })
}

// === impl Score ===

impl Score {
    /// What a match without a path (or a rule without matches) scores:
    /// the prefix `/`.
    const ROOT: Self = Self {
        host: None,
        path: 1,
        method: false,
        headers: 0,
        query: 0,
    };
}

// === impl HostMatch ===

impl HostMatch {
    /// From the API; `None` when the match has no value.
    pub fn from_proto(h: api::HostMatch) -> Option<Self> {
        match h.r#match? {
            api::host_match::Match::Exact(host) => Some(Self::Exact(host)),
            api::host_match::Match::Suffix(s) => Some(Self::Suffix(s.reverse_labels)),
        }
    }

    fn score(&self, host: &str) -> Option<HostScore> {
        match self {
            Self::Exact(want) => {
                let host = if want.ends_with('.') {
                    host
                } else {
                    host.strip_suffix('.').unwrap_or(host)
                };
                want.eq_ignore_ascii_case(host)
                    .then_some(HostScore::Exact(want.len()))
            }
            Self::Suffix(reverse) => {
                let mut host = if reverse.first().map(String::as_str) == Some("") {
                    host
                } else {
                    host.strip_suffix('.').unwrap_or(host)
                };
                let mut len = 0;
                for label in reverse {
                    let split = host.len().checked_sub(label.len())?;
                    let (head, tail) = (host.get(..split)?, host.get(split..)?);
                    if !tail.eq_ignore_ascii_case(label) {
                        return None;
                    }
                    host = head.strip_suffix('.')?;
                    len += label.len() + 1;
                }
                // At least one label must remain before the suffix.
                (!host.is_empty()).then_some(HostScore::Suffix(len))
            }
        }
    }
}

// === impl RequestMatch ===

impl RequestMatch {
    /// Compiles one API match (regexes anchored), so that requests are
    /// matched without compiling or allocating anything.
    pub fn from_proto(m: api::HttpRouteMatch) -> Result<Self, InvalidMatch> {
        let method = m
            .method
            .map(|method| {
                http::Method::try_from(method).map_err(|e| InvalidMatch::Method(e.to_string()))
            })
            .transpose()?;
        let path = match m.path {
            None => None,
            Some(p) => Some(match p.kind.ok_or(InvalidMatch::MissingPath)? {
                path_match::Kind::Exact(p) => PathMatch::Exact(p),
                path_match::Kind::Prefix(p) => PathMatch::Prefix(p),
                path_match::Kind::Regex(re) => PathMatch::Regex(anchored(&re)?),
            }),
        };
        let headers = m
            .headers
            .into_iter()
            .map(|h| {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| InvalidMatch::HeaderName(h.name.clone()))?;
                let value = match h.value {
                    Some(header_match::Value::Exact(v)) => ValueMatch::Exact(
                        HeaderValue::from_bytes(&v)
                            .map_err(|_| InvalidMatch::HeaderValue(h.name.clone()))?,
                    ),
                    Some(header_match::Value::Regex(re)) => ValueMatch::Regex(anchored(&re)?),
                    None => return Err(InvalidMatch::MissingValue(h.name)),
                };
                Ok(HeaderMatch { name, value })
            })
            .collect::<Result<Box<[_]>, _>>()?;
        let query = m
            .query_params
            .into_iter()
            .map(|q| {
                if q.name.is_empty() {
                    return Err(InvalidMatch::QueryName);
                }
                let value = match q.value {
                    Some(query_param_match::Value::Exact(v)) => ValueMatch::Exact(v),
                    Some(query_param_match::Value::Regex(re)) => ValueMatch::Regex(anchored(&re)?),
                    None => return Err(InvalidMatch::MissingValue(q.name)),
                };
                Ok(QueryMatch {
                    name: q.name,
                    value,
                })
            })
            .collect::<Result<Box<[_]>, _>>()?;
        Ok(Self {
            method,
            path,
            headers,
            query,
        })
    }

    /// How well `req` matches, or `None`. A match without a path counts
    /// as the prefix `/` (Gateway API).
    fn score(&self, req: &RequestHead<'_>) -> Option<Score> {
        let mut score = Score::ROOT;
        if let Some(method) = &self.method {
            if method != req.method {
                return None;
            }
            score.method = true;
        }
        if let Some(path) = &self.path {
            score.path = path.match_len(req.uri.path())?;
        }
        if !self.headers.iter().all(|h| h.matches(req.headers)) {
            return None;
        }
        score.headers = self.headers.len();
        if !self.query.is_empty() {
            let query = req.uri.query().unwrap_or("");
            if !self.query.iter().all(|q| q.matches(query)) {
                return None;
            }
            score.query = self.query.len();
        }
        Some(score)
    }
}

// === impl PathMatch ===

impl PathMatch {
    /// The length of the match, Linkerd's measure of specificity.
    fn match_len(&self, path: &str) -> Option<usize> {
        match self {
            Self::Exact(p) => (p == path).then_some(p.len()),
            Self::Regex(re) => re.is_match(path).then_some(path.len()),
            Self::Prefix(p) => {
                if p == "/" {
                    return Some(1);
                }
                let p = p.trim_end_matches('/');
                let rest = path.trim_end_matches('/').strip_prefix(p)?;
                (rest.is_empty() || rest.starts_with('/')).then_some(p.len())
            }
        }
    }
}

// === impl HeaderMatch ===

impl HeaderMatch {
    /// Any of the header's values matches. Regexes see the value as text:
    /// a value that is not visible ASCII never matches one.
    fn matches(&self, headers: &http::HeaderMap) -> bool {
        headers
            .get_all(&self.name)
            .iter()
            .any(|v| match &self.value {
                ValueMatch::Exact(want) => v == want,
                ValueMatch::Regex(re) => v.to_str().is_ok_and(|v| re.is_match(v)),
            })
    }
}

// === impl QueryMatch ===

impl QueryMatch {
    /// Any parameter of that name matches (names and values decoded).
    fn matches(&self, query: &str) -> bool {
        form_urlencoded::parse(query.as_bytes()).any(|(name, value)| {
            name == self.name.as_str()
                && match &self.value {
                    ValueMatch::Exact(want) => value == want.as_str(),
                    ValueMatch::Regex(re) => re.is_match(&value),
                }
        })
    }
}

#[cfg(test)]
mod tests {

    #![allow(clippy::unwrap_used)]
    use super::*;
    use linkerd2_proxy_api::http_route::{HeaderMatch as ApiHeader, PathMatch as ApiPath};
    use linkerd2_proxy_api::http_route::{HttpRouteMatch, QueryParamMatch};
    use linkerd2_proxy_api::http_types::{http_method, HttpMethod};

    fn path(kind: path_match::Kind) -> HttpRouteMatch {
        HttpRouteMatch {
            path: Some(ApiPath { kind: Some(kind) }),
            ..Default::default()
        }
    }

    fn score(m: &RequestMatch, method: &str, uri: &str, headers: &[(&str, &str)]) -> Option<Score> {
        let method: http::Method = method.parse().unwrap();
        let uri: http::Uri = uri.parse().unwrap();
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m.score(&RequestHead {
            method: &method,
            uri: &uri,
            headers: &h,
        })
    }

    fn matches(m: &RequestMatch, uri: &str) -> bool {
        score(m, "GET", uri, &[]).is_some()
    }

    #[test]
    fn exact_paths_match_only_themselves() {
        let m = RequestMatch::from_proto(path(path_match::Kind::Exact("/ready".into()))).unwrap();
        assert!(matches(&m, "/ready"));
        assert!(
            matches(&m, "/ready?x=1"),
            "the query is not part of the path"
        );
        for other in ["/ready/", "/readyz", "/", "/x/ready"] {
            assert!(!matches(&m, other), "{other}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        for prefix in ["/api", "/api/"] {
            let m =
                RequestMatch::from_proto(path(path_match::Kind::Prefix(prefix.into()))).unwrap();
            for yes in ["/api", "/api/", "/api/v1", "/api/v1/x"] {
                assert!(matches(&m, yes), "{prefix} {yes}");
            }
            for no in ["/apis", "/", "/x/api"] {
                assert!(!matches(&m, no), "{prefix} {no}");
            }
        }
        let all = RequestMatch::from_proto(path(path_match::Kind::Prefix("/".into()))).unwrap();
        assert!(matches(&all, "/anything/at/all"));
    }

    #[test]
    fn path_regexes_match_the_whole_path() {
        let m = RequestMatch::from_proto(path(path_match::Kind::Regex("/api/.*".into()))).unwrap();
        assert!(matches(&m, "/api/"));
        assert!(matches(&m, "/api/v1/users"));
        assert!(!matches(&m, "/x/api/v1"), "anchored at the start");
        let m = RequestMatch::from_proto(path(path_match::Kind::Regex("/metrics".into()))).unwrap();
        assert!(matches(&m, "/metrics"));
        assert!(!matches(&m, "/metrics/secret"), "anchored at the end");
        assert!(!matches(&m, "/prefix/metrics"));
        // Alternation is anchored as a whole, not per branch.
        let m = RequestMatch::from_proto(path(path_match::Kind::Regex("/a|/b".into()))).unwrap();
        assert!(matches(&m, "/b"));
        assert!(!matches(&m, "/a/x") && !matches(&m, "/x/b"));
        let err = RequestMatch::from_proto(path(path_match::Kind::Regex("/(".into()))).unwrap_err();
        assert!(err.to_string().contains("invalid regex"), "{err}");
        assert!(RequestMatch::from_proto(HttpRouteMatch {
            path: Some(ApiPath { kind: None }),
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn methods_headers_and_query_params_must_all_hold() {
        let m = RequestMatch::from_proto(HttpRouteMatch {
            method: Some(HttpMethod {
                r#type: Some(http_method::Type::Registered(
                    http_method::Registered::Post.into(),
                )),
            }),
            headers: vec![
                ApiHeader {
                    name: "x-tenant".into(),
                    value: Some(header_match::Value::Exact(b"blue".to_vec())),
                },
                ApiHeader {
                    name: "user-agent".into(),
                    value: Some(header_match::Value::Regex(".*Firefox.*".into())),
                },
            ],
            query_params: vec![QueryParamMatch {
                name: "page".into(),
                value: Some(query_param_match::Value::Regex("[0-9]+".into())),
            }],
            ..Default::default()
        })
        .unwrap();
        let ok = [("x-tenant", "blue"), ("user-agent", "Mozilla Firefox/1")];
        assert!(score(&m, "POST", "/x?page=12", &ok).is_some());
        assert!(score(&m, "GET", "/x?page=12", &ok).is_none(), "method");
        assert!(
            score(&m, "POST", "/x?page=12a", &ok).is_none(),
            "query regex anchored"
        );
        assert!(score(&m, "POST", "/x", &ok).is_none(), "query missing");
        assert!(
            score(&m, "POST", "/x?page=1", &[("x-tenant", "blue")]).is_none(),
            "header missing"
        );
        let other_tenant = [("x-tenant", "green"), ("user-agent", "Firefox")];
        assert!(score(&m, "POST", "/x?page=1", &other_tenant).is_none());
        // Any value of a repeated header may match.
        let repeated = [
            ("x-tenant", "green"),
            ("x-tenant", "blue"),
            ("user-agent", "Firefox"),
        ];
        assert!(score(&m, "POST", "/x?a=b&page=7", &repeated).is_some());
        let s = score(&m, "POST", "/x?page=1", &ok).unwrap();
        assert!(s.method && s.headers == 2 && s.query == 1);
    }

    #[test]
    fn query_values_are_decoded() {
        let m = RequestMatch::from_proto(HttpRouteMatch {
            query_params: vec![QueryParamMatch {
                name: "q".into(),
                value: Some(query_param_match::Value::Exact("a b/c".into())),
            }],
            ..Default::default()
        })
        .unwrap();
        assert!(matches(&m, "/?q=a%20b%2Fc"));
        assert!(matches(&m, "/?q=a+b/c"));
        assert!(!matches(&m, "/?q=a"));
    }

    #[test]
    fn invalid_matches_are_refused() {
        let bad_header = HttpRouteMatch {
            headers: vec![ApiHeader {
                name: "bad header".into(),
                value: Some(header_match::Value::Exact(b"x".to_vec())),
            }],
            ..Default::default()
        };
        assert!(matches!(
            RequestMatch::from_proto(bad_header),
            Err(InvalidMatch::HeaderName(_))
        ));
        let no_value = HttpRouteMatch {
            headers: vec![ApiHeader {
                name: "x".into(),
                value: None,
            }],
            ..Default::default()
        };
        assert!(matches!(
            RequestMatch::from_proto(no_value),
            Err(InvalidMatch::MissingValue(_))
        ));
        let no_name = HttpRouteMatch {
            query_params: vec![QueryParamMatch {
                name: String::new(),
                value: Some(query_param_match::Value::Exact("x".into())),
            }],
            ..Default::default()
        };
        assert!(matches!(
            RequestMatch::from_proto(no_name),
            Err(InvalidMatch::QueryName)
        ));
    }

    #[test]
    fn hosts_exact_and_suffix() {
        let exact = HostMatch::Exact("web.shop".into());
        assert!(exact.score("web.shop").is_some());
        assert!(exact.score("WEB.shop.").is_some());
        assert!(exact.score("api.web.shop").is_none());
        let suffix = HostMatch::Suffix(vec!["shop".into(), "web".into()]);
        assert_eq!(suffix.score("a.web.shop"), Some(HostScore::Suffix(9)));
        assert!(suffix.score("a.b.WEB.shop").is_some());
        assert!(suffix.score("web.shop").is_none(), "needs a label before");
        assert!(suffix.score("aweb.shop").is_none());
        assert!(HostScore::Exact(1) > HostScore::Suffix(100));
    }

    #[test]
    fn request_hosts_come_from_the_uri_or_host_header() {
        let h = |host: &str| {
            let mut m = http::HeaderMap::new();
            m.insert(http::header::HOST, host.parse().unwrap());
            m
        };
        let rel: http::Uri = "/x".parse().unwrap();
        assert_eq!(request_host(&rel, &h("web:8080")), Some("web"));
        assert_eq!(request_host(&rel, &h("[::1]:80")), Some("::1"));
        assert_eq!(request_host(&rel, &http::HeaderMap::new()), None);
        let abs: http::Uri = "http://api.shop:80/x".parse().unwrap();
        assert_eq!(request_host(&abs, &h("other")), Some("api.shop"));
    }

    #[test]
    fn scores_order_by_specificity() {
        let exact = RequestMatch::from_proto(path(path_match::Kind::Exact("/a/b".into()))).unwrap();
        let prefix = RequestMatch::from_proto(path(path_match::Kind::Prefix("/a".into()))).unwrap();
        let root = RequestMatch::default();
        let s = |m: &RequestMatch| score(m, "GET", "/a/b", &[]).unwrap();
        assert!(s(&exact) > s(&prefix));
        assert!(s(&prefix) > s(&root));
        assert_eq!(first_max([3, 1, 3].into_iter()), Some(3));
    }

    #[test]
    fn routes_need_a_host_and_a_rule() {
        let host = |h: &str| HostMatch::Exact(h.into());
        let api = RequestMatch::from_proto(path(path_match::Kind::Prefix("/api".into()))).unwrap();
        let (method, headers) = (http::Method::GET, http::HeaderMap::new());
        let on = |hosts: &[HostMatch], rules: &[&[RequestMatch]], uri: &str, h: Option<&str>| {
            let uri: http::Uri = uri.parse().unwrap();
            let req = RequestHead {
                method: &method,
                uri: &uri,
                headers: &headers,
            };
            route_score(hosts, rules.iter().copied(), &req, h)
        };
        let api_rule: &[RequestMatch] = std::slice::from_ref(&api);
        assert!(
            on(&[], &[api_rule], "/api/x", None).is_some(),
            "no hosts: any"
        );
        assert!(on(&[], &[api_rule], "/web", None).is_none());
        assert!(on(&[], &[&[]], "/web", None).is_some(), "no matches: all");
        assert!(on(&[], &[], "/web", None).is_none(), "no rules: none");
        let web = [host("web.shop")];
        assert!(on(&web, &[api_rule], "/api", Some("WEB.shop")).is_some());
        assert!(on(&web, &[api_rule], "/api", Some("api.shop")).is_none());
        assert!(
            on(&web, &[api_rule], "/api", None).is_none(),
            "hosts need one"
        );
        // A host makes a route more specific than one without.
        assert!(on(&web, &[&[]], "/", Some("web.shop")) > on(&[], &[&[]], "/", Some("web.shop")));
        // The best rule counts.
        assert_eq!(
            on(&[], &[&[], api_rule], "/api", None),
            on(&[], &[api_rule], "/api", None)
        );
    }
}
