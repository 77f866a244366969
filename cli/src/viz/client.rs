//! Reaching the controller's metrics API: plain HTTP/1.1 to its admin port
//! (`weft demo`, a port-forward), or, with a kubeconfig, through the
//! Kubernetes API server's service proxy, so `weft stat` works against a
//! cluster with no port-forward, as `linkerd viz stat` does.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use weft_inject::names;
use weft_metrics_api::api::ErrorBody;

use crate::kube::KubeArgs;

/// Where `weft demo` serves the metrics API, and so where the CLI looks
/// when told nothing.
pub const DEFAULT_CONTROLLER_ADDR: &str = "127.0.0.1:9990";
/// How long a TCP connect to the controller may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take, end to end (`top` adds its collection
/// time).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read: far above any real table, small enough that a
/// wrong port cannot exhaust memory.
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// The port name of [`names::ADMIN_SERVICE`], as `weft install` writes it.
const ADMIN_PORT_NAME: &str = "admin";

/// Help shown under every metrics command: which way wins.
pub const REACHING_HELP: &str = "\
Reaching the controller (the first that applies wins):
  1. --controller-addr HOST:PORT or $WEFT_CONTROLLER_ADDR: plain HTTP to that
     address (`weft demo`, or a `kubectl port-forward` to the admin port).
  2. --kubeconfig or --context given, or $KUBECONFIG set: through the Kubernetes
     API server's service proxy to service weft-admin (port `admin`) in
     --weft-namespace (default: weft), with no port-forward.
  3. Otherwise 127.0.0.1:9990, where `weft demo` serves it.";

/// Flags that choose how to reach the controller, flattened into `weft
/// stat`, `edges`, `routes` and `top`.
#[derive(Clone, Debug, clap::Args)]
pub struct ControllerArgs {
    /// The controller's admin address [default: 127.0.0.1:9990 unless a
    /// kubeconfig is given].
    #[arg(
        long,
        env = "WEFT_CONTROLLER_ADDR",
        value_name = "HOST:PORT",
        value_parser = parse_addr
    )]
    controller_addr: Option<String>,
    /// Namespace of the Weft control plane, in cluster mode.
    #[arg(
        long,
        env = "WEFT_NAMESPACE",
        value_name = "NS",
        default_value = names::NAMESPACE,
        value_parser = parse_namespace
    )]
    weft_namespace: String,
    #[command(flatten)]
    kube: KubeArgs,
}

/// A client for the controller's metrics API, however it is reached.
#[derive(Clone)]
pub struct ControllerClient {
    target: Target,
}

#[derive(Clone)]
enum Target {
    Direct {
        addr: String,
    },
    Cluster {
        client: kube::Client,
        namespace: String,
    },
}

/// Why a metrics request failed; each says where it looked and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// No TCP connection to the admin port.
    #[error(
        "cannot reach the Weft controller at {at} ({reason}); is it running? start one with \
         `weft demo`, or pass --controller-addr / --kubeconfig"
    )]
    Unreachable {
        /// Where it looked.
        at: String,
        /// What the connect said.
        reason: String,
    },
    /// The Kubernetes API server itself could not be used.
    #[error(
        "cannot reach the Weft controller through the Kubernetes API server ({reason}); check \
         --kubeconfig / --context, or pass --controller-addr"
    )]
    ApiServer {
        /// What the client said.
        reason: String,
    },
    /// The API server answered for the controller: no such service, no
    /// ready endpoint, or no permission.
    #[error("the Kubernetes API server cannot proxy to {at} ({status}): {message}; {hint}")]
    ProxyRefused {
        /// The service it was asked for.
        at: String,
        /// Its status code.
        status: StatusCode,
        /// Its message.
        message: String,
        /// What to check.
        hint: &'static str,
    },
    /// No answer within the request timeout.
    #[error("the Weft controller at {at} did not answer within {}s", .timeout.as_secs())]
    Timeout {
        /// Where it looked.
        at: String,
        /// The limit.
        timeout: Duration,
    },
    /// The controller knows no such resource (its `404` message).
    #[error("{message}")]
    NotFound {
        /// The controller's message.
        message: String,
    },
    /// The controller refused the query (`400`).
    #[error("the Weft controller at {at} refused the query ({status}): {message}")]
    Refused {
        /// Where it looked.
        at: String,
        /// The status code.
        status: StatusCode,
        /// The controller's message.
        message: String,
    },
    /// The controller failed (`5xx`).
    #[error("the Weft controller at {at} failed ({status}): {message}")]
    Failed {
        /// Where it looked.
        at: String,
        /// The status code.
        status: StatusCode,
        /// The controller's message.
        message: String,
    },
    /// An error answer that is not the controller's: probably some other
    /// server on that port.
    #[error(
        "{at} answered {status} without a Weft error document; is it the Weft controller's \
         admin port?"
    )]
    NotController {
        /// Where it looked.
        at: String,
        /// The status code.
        status: StatusCode,
    },
    /// The answer exceeded [`MAX_BODY`].
    #[error("the answer of the Weft controller at {at} is larger than {} MiB", MAX_BODY >> 20)]
    TooLarge {
        /// Where it looked.
        at: String,
    },
    /// The answer is not the document the API defines.
    #[error("cannot read the answer of the Weft controller at {at}: {reason}")]
    Decode {
        /// Where it looked.
        at: String,
        /// The JSON error.
        reason: String,
    },
    /// The connection broke during the exchange.
    #[error("the exchange with the Weft controller at {at} failed: {reason}")]
    Broken {
        /// Where it looked.
        at: String,
        /// What broke.
        reason: String,
    },
}

// === impl ControllerArgs ===

impl ControllerArgs {
    /// The client these flags choose (see [`REACHING_HELP`]). Builds a kube
    /// client in cluster mode; contacts nothing yet.
    pub async fn connect(&self) -> anyhow::Result<ControllerClient> {
        if let Some(addr) = &self.controller_addr {
            return Ok(ControllerClient::direct(addr));
        }
        let kubeconfig_env = std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty());
        if self.kube.kubeconfig.is_some() || self.kube.context.is_some() || kubeconfig_env {
            let client = self.kube.client().await?;
            return Ok(ControllerClient::cluster(
                client,
                self.weft_namespace.clone(),
            ));
        }
        Ok(ControllerClient::direct(DEFAULT_CONTROLLER_ADDR))
    }
}

/// `HOST:PORT`, checked before anything is contacted.
fn parse_addr(text: &str) -> Result<String, String> {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {
            Ok(text.to_owned())
        }
        _ => Err(format!(
            "expected HOST:PORT (e.g. 127.0.0.1:9990), got {text:?}"
        )),
    }
}

/// A namespace name (DNS-1123 label), since it becomes part of a URL path.
fn parse_namespace(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a namespace name"))
    }
}

// === impl ControllerClient ===

impl ControllerClient {
    /// Plain HTTP to the admin port at `addr` (`HOST:PORT`, or a
    /// `SocketAddr`).
    pub fn direct(addr: impl fmt::Display) -> Self {
        Self {
            target: Target::Direct {
                addr: addr.to_string(),
            },
        }
    }

    /// Through the API server's service proxy to the admin service of the
    /// control plane in `namespace`.
    pub fn cluster(client: kube::Client, namespace: impl Into<String>) -> Self {
        Self {
            target: Target::Cluster {
                client,
                namespace: namespace.into(),
            },
        }
    }

    /// Where requests go, for messages.
    pub fn location(&self) -> String {
        match &self.target {
            Target::Direct { addr } => addr.clone(),
            Target::Cluster { namespace, .. } => format!(
                "service {}:{ADMIN_PORT_NAME} in namespace {namespace}",
                names::ADMIN_SERVICE
            ),
        }
    }

    /// `GET path?query`, decoded as `T`; error answers become
    /// [`ControllerError`]s carrying the controller's own message.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &str,
        timeout: Duration,
    ) -> Result<T, ControllerError> {
        let path_and_query = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        let (status, body) = match &self.target {
            Target::Direct { addr } => get_direct(addr, &path_and_query, timeout).await?,
            Target::Cluster { client, namespace } => {
                let at = self.location();
                get_cluster(client, namespace, &path_and_query, timeout, &at).await?
            }
        };
        self.decode(status, &body)
    }

    fn decode<T: DeserializeOwned>(
        &self,
        status: StatusCode,
        body: &[u8],
    ) -> Result<T, ControllerError> {
        let at = self.location();
        if status.is_success() {
            return serde_json::from_slice(body).map_err(|e| ControllerError::Decode {
                at,
                reason: e.to_string(),
            });
        }
        if let Ok(ErrorBody { error: message }) = serde_json::from_slice::<ErrorBody>(body) {
            return Err(match status {
                StatusCode::NOT_FOUND => ControllerError::NotFound { message },
                s if s.is_client_error() => ControllerError::Refused {
                    at,
                    status,
                    message,
                },
                _ => ControllerError::Failed {
                    at,
                    status,
                    message,
                },
            });
        }
        Err(match &self.target {
            Target::Direct { .. } => ControllerError::NotController { at, status },
            Target::Cluster { .. } => ControllerError::ProxyRefused {
                at,
                status,
                message: status_message(body),
                hint: match status {
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                        "the kubeconfig's user needs `get` on services/proxy in that namespace"
                    }
                    _ => {
                        "is Weft installed and its controller ready (`weft check`)? pass \
                         --weft-namespace if the control plane runs elsewhere, or \
                         --controller-addr to skip the API server"
                    }
                },
            },
        })
    }
}

impl fmt::Debug for ControllerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControllerClient")
            .field("at", &self.location())
            .finish()
    }
}

/// One request on a fresh HTTP/1.1 connection.
async fn get_direct(
    addr: &str,
    path_and_query: &str,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), ControllerError> {
    let unreachable = |reason: String| ControllerError::Unreachable {
        at: addr.to_owned(),
        reason,
    };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Err(_) => {
            return Err(unreachable(format!(
                "no connection within {}s",
                CONNECT_TIMEOUT.as_secs()
            )))
        }
        Ok(Err(e)) => return Err(unreachable(io_reason(&e))),
        Ok(Ok(stream)) => stream,
    };
    let broken = |reason: String| ControllerError::Broken {
        at: addr.to_owned(),
        reason,
    };
    let exchange = async {
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| broken(e.to_string()))?;
        let _conn = AbortOnDrop(tokio::spawn(conn));
        let req = Request::get(path_and_query)
            .header(header::HOST, addr)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("weft/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| broken(e.to_string()))?;
        let rsp = tx
            .send_request(req)
            .await
            .map_err(|e| broken(e.to_string()))?;
        let status = rsp.status();
        let body = read_limited(rsp.into_body(), addr).await?;
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ControllerError::Timeout {
            at: addr.to_owned(),
            timeout,
        })?
}

/// One request through `/api/v1/namespaces/NS/services/weft-admin:admin/proxy`.
async fn get_cluster(
    client: &kube::Client,
    namespace: &str,
    path_and_query: &str,
    timeout: Duration,
    at: &str,
) -> Result<(StatusCode, Bytes), ControllerError> {
    let uri = format!(
        "/api/v1/namespaces/{namespace}/services/{}:{ADMIN_PORT_NAME}/proxy{path_and_query}",
        names::ADMIN_SERVICE
    );
    let exchange = async {
        let req = Request::get(uri)
            .header(header::ACCEPT, "application/json")
            .body(kube::client::Body::empty())
            .map_err(|e| ControllerError::ApiServer {
                reason: e.to_string(),
            })?;
        let rsp = client
            .send(req)
            .await
            .map_err(|e| ControllerError::ApiServer {
                reason: e.to_string(),
            })?;
        let status = rsp.status();
        let body = read_limited(rsp.into_body(), at).await?;
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ControllerError::Timeout {
            at: at.to_owned(),
            timeout,
        })?
}

/// The whole body, refusing more than [`MAX_BODY`].
async fn read_limited<B>(body: B, at: &str) -> Result<Bytes, ControllerError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ControllerError::TooLarge { at: at.to_owned() })
        }
        Err(e) => Err(ControllerError::Broken {
            at: at.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// A connect error as a short phrase (`connection refused`).
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        std::io::ErrorKind::TimedOut => "connection timed out".to_owned(),
        _ => e.to_string(),
    }
}

/// The `message` of a Kubernetes `Status`, else the start of the body.
fn status_message(body: &[u8]) -> String {
    let from_status = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_owned));
    from_status.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        match text.char_indices().nth(200) {
            Some((i, _)) => format!("{}…", &text[..i]),
            None if text.is_empty() => "empty answer".to_owned(),
            None => text.to_owned(),
        }
    })
}

/// Stops the connection task when the exchange ends or times out.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_need_a_port() {
        assert!(parse_addr("127.0.0.1:9990").is_ok());
        assert!(parse_addr("localhost:1").is_ok());
        assert!(parse_addr("[::1]:9990").is_ok());
        assert!(parse_addr("127.0.0.1").is_err());
        assert!(parse_addr(":9990").is_err());
        assert!(parse_addr("host:0").is_err());
        assert!(parse_addr("host:http").is_err());
    }

    #[test]
    fn namespaces_are_dns_labels() {
        assert!(parse_namespace("weft").is_ok());
        assert!(parse_namespace("weft-2").is_ok());
        assert!(parse_namespace("a/b").is_err());
        assert!(parse_namespace("-a").is_err());
        assert!(parse_namespace("").is_err());
    }

    #[test]
    fn error_answers_keep_the_controllers_message() {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        let c = ControllerClient::direct(addr);
        assert_eq!(c.location(), "127.0.0.1:1");
        let e = c
            .decode::<serde_json::Value>(StatusCode::NOT_FOUND, br#"{"error":"no deployment web"}"#)
            .unwrap_err();
        assert_eq!(e.to_string(), "no deployment web");
        let e = c
            .decode::<serde_json::Value>(StatusCode::NOT_FOUND, b"not found")
            .unwrap_err();
        assert!(e.to_string().contains("admin port"), "{e}");
        let e = c
            .decode::<serde_json::Value>(
                StatusCode::SERVICE_UNAVAILABLE,
                br#"{"error":"warming up"}"#,
            )
            .unwrap_err();
        assert!(
            e.to_string().contains("503") && e.to_string().contains("warming up"),
            "{e}"
        );
    }

    #[test]
    fn status_messages_are_read_or_cut() {
        assert_eq!(
            status_message(br#"{"kind":"Status","message":"no endpoints available"}"#),
            "no endpoints available"
        );
        assert_eq!(status_message(b""), "empty answer");
        assert_eq!(status_message(&[b'x'; 300]).chars().count(), 201);
    }
}
