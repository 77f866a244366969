//! The verdict of `weft demo --duration`: did traffic flow with mTLS on
//! every edge? Read from each client proxy's own `/metrics`, the ground
//! truth the controller's metrics API is computed from:
//!
//! - an edge `A → B` passed when A's proxy counted outbound responses
//!   from B's pods over mTLS (`response_total{direction="outbound",
//!   tls="true", dst_deployment="B"}` > 0) with B's identity as
//!   `server_id`;
//! - and no outbound response to a demo workload or a demo Service's name
//!   went without mTLS (`tls` other than `true`).

use super::client::fetch;
use super::topology::{identity, NAMESPACE};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use weft_metrics_api::exposition::{self, Family, Labels};

/// One edge's outcome.
#[derive(Debug)]
pub struct EdgeVerdict {
    /// Client workload.
    pub client: &'static str,
    /// Server workload.
    pub server: &'static str,
    /// Outbound responses from the server over mTLS with its identity.
    pub mtls: u64,
    /// Outbound responses from the server without mTLS.
    pub plaintext: u64,
    /// `server_id`s seen on mTLS responses that are not the server's.
    pub wrong_ids: Vec<String>,
    /// Why the client's metrics could not be read, if so.
    pub scrape_error: Option<String>,
}

/// Every edge's verdict, and plaintext requests no edge accounts for.
#[derive(Debug)]
pub struct Report {
    /// In the order asked.
    pub edges: Vec<EdgeVerdict>,
    /// Outbound responses to a demo Service's name without mTLS and
    /// without a discovered destination (`client`, authority, count).
    pub undiscovered: Vec<(&'static str, String, u64)>,
}

/// Scrapes each client proxy and judges `edges`; `admin` gives a
/// workload's proxy admin address.
pub async fn check(
    edges: &[(&'static str, &'static str)],
    admin: impl Fn(&str) -> Option<SocketAddr>,
) -> Report {
    let mut scraped: BTreeMap<&str, Result<Vec<Sample>, String>> = BTreeMap::new();
    for (client, _) in edges {
        if scraped.contains_key(client) {
            continue;
        }
        let result = match admin(client) {
            Some(addr) => fetch(addr, "/metrics", Duration::from_secs(5))
                .await
                .map_err(|e| format!("{e:#}"))
                .and_then(|(_, body)| parse(&String::from_utf8_lossy(&body))),
            None => Err(format!("no proxy for {client}")),
        };
        scraped.insert(client, result);
    }
    let mut report = Report {
        edges: Vec::new(),
        undiscovered: Vec::new(),
    };
    for (client, server) in edges {
        let samples = match &scraped[client] {
            Ok(s) => s,
            Err(e) => {
                report.edges.push(EdgeVerdict {
                    client,
                    server,
                    mtls: 0,
                    plaintext: 0,
                    wrong_ids: Vec::new(),
                    scrape_error: Some(e.clone()),
                });
                continue;
            }
        };
        report.edges.push(judge(client, server, samples));
    }
    for (client, result) in &scraped {
        if let Ok(samples) = result {
            report.undiscovered.extend(
                undiscovered(samples)
                    .into_iter()
                    .map(|(authority, n)| (*client, authority, n)),
            );
        }
    }
    report
}

/// Outbound responses to a demo Service's name that went without mTLS
/// and without a discovered endpoint (the proxy fell back to the name as
/// it was), by authority.
fn undiscovered(samples: &[Sample]) -> BTreeMap<String, u64> {
    let suffix = format!(".{NAMESPACE}.svc.cluster.local:");
    let mut leaks: BTreeMap<String, u64> = BTreeMap::new();
    for s in outbound_responses(samples) {
        let authority = s.label("authority").unwrap_or_default();
        if s.label("tls") != Some("true")
            && s.label("dst_deployment").is_none()
            && authority.contains(&suffix)
        {
            *leaks.entry(authority.to_owned()).or_default() += s.value as u64;
        }
    }
    leaks
}

fn judge(client: &'static str, server: &'static str, samples: &[Sample]) -> EdgeVerdict {
    let expected = identity(server);
    let mut v = EdgeVerdict {
        client,
        server,
        mtls: 0,
        plaintext: 0,
        wrong_ids: Vec::new(),
        scrape_error: None,
    };
    for s in outbound_responses(samples) {
        if s.label("dst_deployment") != Some(server) || s.label("dst_namespace") != Some(NAMESPACE)
        {
            continue;
        }
        let n = s.value as u64;
        match (s.label("tls"), s.label("server_id")) {
            (Some("true"), Some(id)) if id == expected => v.mtls += n,
            (Some("true"), id) => {
                let id = id.unwrap_or("(none)").to_owned();
                if !v.wrong_ids.contains(&id) {
                    v.wrong_ids.push(id);
                }
            }
            _ => v.plaintext += n,
        }
    }
    v
}

fn outbound_responses(samples: &[Sample]) -> impl Iterator<Item = &Sample> {
    samples
        .iter()
        .filter(|s| s.label("direction") == Some("outbound"))
}

// === impl EdgeVerdict ===

impl EdgeVerdict {
    /// Traffic flowed, all of it over mTLS to the right identity.
    pub fn passed(&self) -> bool {
        self.scrape_error.is_none()
            && self.mtls > 0
            && self.plaintext == 0
            && self.wrong_ids.is_empty()
    }

    /// What went wrong, for the error message.
    pub fn problem(&self) -> String {
        if let Some(e) = &self.scrape_error {
            return format!("cannot read {}'s proxy metrics: {e}", self.client);
        }
        let mut problems = Vec::new();
        if self.mtls == 0 {
            problems.push("no responses over mTLS".to_owned());
        }
        if self.plaintext > 0 {
            problems.push(format!("{} responses without mTLS", self.plaintext));
        }
        if !self.wrong_ids.is_empty() {
            problems.push(format!(
                "unexpected server_id {}",
                self.wrong_ids.join(", ")
            ));
        }
        problems.join(", ")
    }
}

impl fmt::Display for EdgeVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let edge = format!("{} → {}", self.client, self.server);
        if self.passed() {
            write!(
                f,
                "√ {edge:<20} {:>6} responses over mTLS, server_id {}",
                self.mtls,
                identity(self.server)
            )
        } else {
            write!(f, "× {edge:<20} {}", self.problem())
        }
    }
}

// === impl Report ===

impl Report {
    /// Every edge passed and nothing went out in plaintext.
    pub fn passed(&self) -> bool {
        self.edges.iter().all(EdgeVerdict::passed) && self.undiscovered.is_empty()
    }

    /// One line per failure, for the error message.
    pub fn problems(&self) -> Vec<String> {
        let edges = self
            .edges
            .iter()
            .filter(|e| !e.passed())
            .map(|e| format!("{} → {}: {}", e.client, e.server, e.problem()));
        let leaks = self.undiscovered.iter().map(|(client, authority, n)| {
            format!("{client} → {authority}: {n} responses without mTLS (not discovered)")
        });
        edges.chain(leaks).collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.edges {
            writeln!(f, "  {e}")?;
        }
        for (client, authority, n) in &self.undiscovered {
            writeln!(
                f,
                "× {client} → {authority}: {n} responses without mTLS (not discovered)"
            )?;
        }
        Ok(())
    }
}

// === Prometheus text ===

/// One `response_total` series of a scrape (summed over `status_code`),
/// as the metrics API's own parser reads it.
#[derive(Clone, Debug)]
struct Sample {
    labels: Labels,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key)
    }
}

/// The `response_total` series of a proxy's `/metrics`, parsed strictly:
/// a garbled or truncated page is an error, never missing traffic.
fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let reduced = exposition::reduce(text).map_err(|e| e.to_string())?;
    Ok(reduced
        .series
        .into_iter()
        .filter(|s| s.key.family() == Family::ResponseTotal)
        .map(|s| Sample {
            labels: s.key.labels().clone(),
            value: s.value,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const WEB: &str = r#"# TYPE response counter
response_total{direction="outbound",authority="books.weft-demo.svc.cluster.local:8080",tls="true",server_id="books-v1.weft-demo.serviceaccount.identity.weft.cluster.local",dst_namespace="weft-demo",dst_deployment="books-v1",status_code="200",classification="success"} 27
response_total{direction="outbound",authority="books.weft-demo.svc.cluster.local:8080",tls="true",server_id="books-v2.weft-demo.serviceaccount.identity.weft.cluster.local",dst_namespace="weft-demo",dst_deployment="books-v2",status_code="200",classification="success"} 3
response_total{direction="outbound",authority="authors.weft-demo.svc.cluster.local:8080",tls="no_identity",dst_namespace="weft-demo",dst_deployment="authors",status_code="200",classification="success"} 5
response_total{direction="inbound",authority="web.weft-demo.svc.cluster.local:8080",tls="true",client_id="traffic.weft-demo.serviceaccount.identity.weft.cluster.local",status_code="200",classification="success"} 30
response_total{direction="outbound",authority="ghost.weft-demo.svc.cluster.local:8080",tls="no_identity",status_code="502",classification="failure"} 2
# EOF
"#;

    #[test]
    fn a_garbled_page_is_an_error() {
        assert_eq!(parse(WEB).unwrap().len(), 5);
        let truncated = &WEB[..WEB.len() - "# EOF\n".len()];
        assert!(parse(truncated).unwrap_err().contains("EOF"));
    }

    #[test]
    fn judges_each_edge_from_the_client_metrics() {
        let samples = parse(WEB).unwrap();
        let v1 = judge("web", "books-v1", &samples);
        assert!(v1.passed(), "{v1:?}");
        assert_eq!(v1.mtls, 27);
        let authors = judge("web", "authors", &samples);
        assert!(!authors.passed());
        assert_eq!(
            authors.problem(),
            "no responses over mTLS, 5 responses without mTLS"
        );
        // An identity that is not the server's fails the edge.
        let text = WEB.replace("server_id=\"books-v2.", "server_id=\"impostor.");
        let v2 = judge("web", "books-v2", &parse(&text).unwrap());
        assert!(!v2.passed());
        assert!(v2.problem().contains("impostor."), "{}", v2.problem());
    }

    #[test]
    fn plaintext_to_a_demo_name_that_was_not_discovered_is_found() {
        let leaks = undiscovered(&parse(WEB).unwrap());
        assert_eq!(
            leaks.into_iter().collect::<Vec<_>>(),
            [("ghost.weft-demo.svc.cluster.local:8080".to_owned(), 2)]
        );
    }
}
