//! Route conditions (which requests a route covers) and response classes
//! (which responses count as failures), compiled once per profile update.
//!
//! The wire form is Linkerd's `RequestMatch` / `ResponseMatch` trees. They
//! are compiled into plain enums with their regexes built, so matching a
//! request costs a few comparisons and one anchored regex per route, never
//! a regex compilation.

use http::{Method, StatusCode};
use linkerd2_proxy_api::destination as api;
use linkerd2_proxy_api::http_types::{http_method, HttpMethod};
use regex::Regex;

/// Why a route's condition could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum ConditionError {
    /// A `pathRegex` that is not a valid regular expression.
    #[error("invalid pathRegex {regex:?}: {source}")]
    Regex {
        /// The expression as received.
        regex: String,
        /// The parser's complaint.
        #[source]
        source: regex::Error,
    },
    /// A match with no condition in it (`{}`), which cannot mean anything.
    #[error("empty request match")]
    Empty,
    /// A method that is not a valid HTTP method token.
    #[error("invalid method {0:?}")]
    Method(String),
}

/// Which requests a route covers.
#[derive(Clone, Debug)]
pub enum RequestCondition {
    /// Every sub-condition holds.
    All(Vec<RequestCondition>),
    /// At least one sub-condition holds.
    Any(Vec<RequestCondition>),
    /// The sub-condition does not hold.
    Not(Box<RequestCondition>),
    /// The path matches this regex in full (anchored at both ends).
    Path(Regex),
    /// The method is this one.
    Method(Method),
}

/// Which responses of a route are failures. Classes are tried in order;
/// the first whose condition holds decides. A response no class covers is
/// a failure if it is a 5xx (Linkerd's default).
#[derive(Clone, Debug, Default)]
pub struct ResponseClasses {
    classes: Vec<(ResponseCondition, bool)>,
}

/// A condition on a response's status.
#[derive(Clone, Debug)]
pub enum ResponseCondition {
    /// Every sub-condition holds.
    All(Vec<ResponseCondition>),
    /// At least one sub-condition holds.
    Any(Vec<ResponseCondition>),
    /// The sub-condition does not hold.
    Not(Box<ResponseCondition>),
    /// The status is within `min..=max`.
    Status {
        /// Lowest status covered.
        min: u16,
        /// Highest status covered.
        max: u16,
    },
}

// === impl RequestCondition ===

impl RequestCondition {
    /// Compiles a wire `RequestMatch`.
    pub fn compile(m: &api::RequestMatch) -> Result<Self, ConditionError> {
        use api::request_match::Match;
        let all = |seq: &api::request_match::Seq| -> Result<Vec<Self>, ConditionError> {
            seq.matches.iter().map(Self::compile).collect()
        };
        match m.r#match.as_ref().ok_or(ConditionError::Empty)? {
            Match::All(seq) => Ok(Self::All(all(seq)?)),
            Match::Any(seq) => Ok(Self::Any(all(seq)?)),
            Match::Not(inner) => Ok(Self::Not(Box::new(Self::compile(inner)?))),
            Match::Path(p) => {
                // Anchored: `/books/[0-9]+` must not match `/books/1/x`.
                let anchored = format!("^(?:{})$", p.regex);
                Regex::new(&anchored)
                    .map(Self::Path)
                    .map_err(|source| ConditionError::Regex {
                        regex: p.regex.clone(),
                        source,
                    })
            }
            Match::Method(m) => method(m).map(Self::Method),
        }
    }

    /// True if the request with `method` and `path` is covered.
    pub fn matches(&self, req_method: &Method, path: &str) -> bool {
        match self {
            Self::All(cs) => cs.iter().all(|c| c.matches(req_method, path)),
            Self::Any(cs) => cs.iter().any(|c| c.matches(req_method, path)),
            Self::Not(c) => !c.matches(req_method, path),
            Self::Path(re) => re.is_match(path),
            Self::Method(m) => m == req_method,
        }
    }
}

fn method(m: &HttpMethod) -> Result<Method, ConditionError> {
    use http_method::{Registered, Type};
    match m.r#type.as_ref() {
        Some(Type::Registered(r)) => {
            let registered = Registered::try_from(*r)
                .map_err(|_| ConditionError::Method(format!("registered method #{r}")))?;
            Ok(match registered {
                Registered::Get => Method::GET,
                Registered::Post => Method::POST,
                Registered::Put => Method::PUT,
                Registered::Delete => Method::DELETE,
                Registered::Patch => Method::PATCH,
                Registered::Options => Method::OPTIONS,
                Registered::Connect => Method::CONNECT,
                Registered::Head => Method::HEAD,
                Registered::Trace => Method::TRACE,
            })
        }
        Some(Type::Unregistered(s)) => {
            Method::from_bytes(s.as_bytes()).map_err(|_| ConditionError::Method(s.clone()))
        }
        None => Err(ConditionError::Empty),
    }
}

// === impl ResponseClasses ===

impl ResponseClasses {
    /// Compiles a route's wire response classes. A class without a
    /// condition covers nothing and is dropped.
    pub fn compile(classes: &[api::ResponseClass]) -> Self {
        Self {
            classes: classes
                .iter()
                .filter_map(|c| {
                    let cond = ResponseCondition::compile(c.condition.as_ref()?)?;
                    Some((cond, c.is_failure))
                })
                .collect(),
        }
    }

    /// True if a response with `status` is a failure by these classes
    /// (for HTTP responses; gRPC is decided by `grpc-status`).
    pub fn is_failure(&self, status: StatusCode) -> bool {
        let code = status.as_u16();
        self.classes
            .iter()
            .find(|(cond, _)| cond.matches(code))
            .map_or(status.is_server_error(), |(_, failure)| *failure)
    }
}

// === impl ResponseCondition ===

impl ResponseCondition {
    fn compile(m: &api::ResponseMatch) -> Option<Self> {
        use api::response_match::Match;
        let all = |seq: &api::response_match::Seq| -> Option<Vec<Self>> {
            seq.matches.iter().map(Self::compile).collect()
        };
        Some(match m.r#match.as_ref()? {
            Match::All(seq) => Self::All(all(seq)?),
            Match::Any(seq) => Self::Any(all(seq)?),
            Match::Not(inner) => Self::Not(Box::new(Self::compile(inner)?)),
            Match::Status(range) => {
                // A missing bound is open on that side.
                let min = u16::try_from(range.min).unwrap_or(u16::MAX);
                let max = if range.max == 0 {
                    u16::MAX
                } else {
                    u16::try_from(range.max).unwrap_or(u16::MAX)
                };
                Self::Status { min, max }
            }
        })
    }

    fn matches(&self, status: u16) -> bool {
        match self {
            Self::All(cs) => cs.iter().all(|c| c.matches(status)),
            Self::Any(cs) => cs.iter().any(|c| c.matches(status)),
            Self::Not(c) => !c.matches(status),
            Self::Status { min, max } => (*min..=*max).contains(&status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::request_match::{Match, Seq};

    fn path(re: &str) -> api::RequestMatch {
        api::RequestMatch {
            r#match: Some(Match::Path(api::PathMatch { regex: re.into() })),
        }
    }

    fn get() -> api::RequestMatch {
        api::RequestMatch {
            r#match: Some(Match::Method(HttpMethod {
                r#type: Some(http_method::Type::Registered(
                    http_method::Registered::Get.into(),
                )),
            })),
        }
    }

    #[test]
    fn paths_are_anchored() {
        let c = RequestCondition::compile(&path("/books/[0-9]+")).unwrap();
        assert!(c.matches(&Method::GET, "/books/12"));
        assert!(!c.matches(&Method::GET, "/books/12/x"));
        assert!(!c.matches(&Method::GET, "/x/books/12"));
        // Alternation stays inside the anchors.
        let c = RequestCondition::compile(&path("/a|/b")).unwrap();
        assert!(c.matches(&Method::GET, "/b"));
        assert!(!c.matches(&Method::GET, "/b/c"));
    }

    #[test]
    fn all_any_not_and_methods() {
        let all = api::RequestMatch {
            r#match: Some(Match::All(Seq {
                matches: vec![get(), path("/books")],
            })),
        };
        let c = RequestCondition::compile(&all).unwrap();
        assert!(c.matches(&Method::GET, "/books"));
        assert!(!c.matches(&Method::POST, "/books"));
        let not = api::RequestMatch {
            r#match: Some(Match::Not(Box::new(get()))),
        };
        let c = RequestCondition::compile(&not).unwrap();
        assert!(c.matches(&Method::POST, "/"));
        assert!(!c.matches(&Method::GET, "/"));
        let any = api::RequestMatch {
            r#match: Some(Match::Any(Seq {
                matches: vec![path("/a"), path("/b")],
            })),
        };
        let c = RequestCondition::compile(&any).unwrap();
        assert!(c.matches(&Method::PUT, "/a") && c.matches(&Method::PUT, "/b"));
        assert!(!c.matches(&Method::PUT, "/c"));
        let custom = api::RequestMatch {
            r#match: Some(Match::Method(HttpMethod {
                r#type: Some(http_method::Type::Unregistered("PURGE".into())),
            })),
        };
        let c = RequestCondition::compile(&custom).unwrap();
        assert!(c.matches(&Method::from_bytes(b"PURGE").unwrap(), "/"));
    }

    #[test]
    fn bad_conditions_are_errors() {
        assert!(matches!(
            RequestCondition::compile(&path("/(")),
            Err(ConditionError::Regex { .. })
        ));
        assert!(matches!(
            RequestCondition::compile(&api::RequestMatch { r#match: None }),
            Err(ConditionError::Empty)
        ));
    }

    #[test]
    fn response_classes_first_match_wins_else_5xx() {
        use api::response_match::Match as R;
        let class = |min, max, is_failure| api::ResponseClass {
            condition: Some(api::ResponseMatch {
                r#match: Some(R::Status(api::HttpStatusRange { min, max })),
            }),
            is_failure,
        };
        let none = ResponseClasses::compile(&[]);
        assert!(none.is_failure(StatusCode::BAD_GATEWAY));
        assert!(!none.is_failure(StatusCode::NOT_FOUND));
        // 404 counts as a failure, 503 does not (e.g. expected shedding).
        let c = ResponseClasses::compile(&[class(404, 404, true), class(503, 503, false)]);
        assert!(c.is_failure(StatusCode::NOT_FOUND));
        assert!(!c.is_failure(StatusCode::SERVICE_UNAVAILABLE));
        assert!(c.is_failure(StatusCode::INTERNAL_SERVER_ERROR));
        let c = ResponseClasses::compile(&[class(500, 599, false), class(500, 500, true)]);
        assert!(!c.is_failure(StatusCode::INTERNAL_SERVER_ERROR));
    }
}
