//! The demo's services, run as tasks inside `weft demo`: small HTTP/1.1
//! servers, each reached only through its own proxy's inbound listener.
//!
//! - `web` (`GET /`) asks `books` for a book, then `authors` for its
//!   author, through its proxy's outbound listener; `GET /books` lists the
//!   books. It fails (500) when a backend did.
//! - `books-v1`, `books-v2` answer `GET /books` and `GET /books/{id}`;
//!   v2 takes 15 ms longer, so the TrafficSplit's leaves differ in
//!   `weft stat`.
//! - `authors` answers `GET /authors/{id}` and fails exactly one request
//!   in 20 (5 %) with a 500.

use super::client::ProxyClient;
use super::topology::{service_url, App};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

/// Connections one app serves at once; further ones wait to be accepted.
const MAX_CONNECTIONS: usize = 256;

/// Time a client has to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// `authors` fails every `FAILURE_EVERY`-th request: 1 in 20 is 5 %.
const FAILURE_EVERY: u64 = 20;

/// The books: id, title, author id.
const BOOKS: [(u64, &str, u64); 6] = [
    (1, "The Dispossessed", 1),
    (2, "A Wizard of Earthsea", 1),
    (3, "Kindred", 2),
    (4, "Parable of the Sower", 2),
    (5, "Solaris", 3),
    (6, "Roadside Picnic", 4),
];

/// The authors: id, name.
const AUTHORS: [(u64, &str); 4] = [
    (1, "Ursula K. Le Guin"),
    (2, "Octavia E. Butler"),
    (3, "Stanisław Lem"),
    (4, "Arkady and Boris Strugatsky"),
];

type Rsp = Response<Full<Bytes>>;

/// One app's state.
enum Service {
    Web {
        proxy: ProxyClient,
        next: AtomicU64,
    },
    Books {
        version: &'static str,
        delay: Duration,
    },
    Authors {
        served: AtomicU64,
    },
}

/// Serves `app` on `listener` until the task is aborted (which also ends
/// its connections). `outbound` is the app's proxy's outbound listener,
/// used by `web` to reach its backends. `None` for the load generator,
/// which serves nothing.
pub fn spawn(
    app: App,
    listener: std::net::TcpListener,
    outbound: std::net::SocketAddr,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let service = match app {
        App::Traffic => return Ok(None),
        App::Web => Service::Web {
            proxy: ProxyClient::new(outbound),
            next: AtomicU64::new(0),
        },
        App::Books { version, delay } => Service::Books { version, delay },
        App::Authors => Service::Authors {
            served: AtomicU64::new(0),
        },
    };
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    Ok(Some(tokio::spawn(serve(listener, Arc::new(service)))))
}

async fn serve(listener: TcpListener, service: Arc<Service>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors or similar: let it pass.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = service.clone();
        connections.spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let service = service.clone();
                async move {
                    let rsp = service.handle(req.method(), req.uri().path()).await;
                    Ok::<_, Infallible>(rsp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

// === impl Service ===

impl Service {
    async fn handle(&self, method: &Method, path: &str) -> Rsp {
        if method != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET here\n");
        }
        match self {
            Self::Web { proxy, next } => web(proxy, next, path).await,
            Self::Books { version, delay } => {
                if !delay.is_zero() {
                    tokio::time::sleep(*delay).await;
                }
                books(version, path)
            }
            Self::Authors { served } => authors(served, path),
        }
    }
}

async fn web(proxy: &ProxyClient, next: &AtomicU64, path: &str) -> Rsp {
    match path {
        "/" => {}
        "/books" => {
            return match proxy.get(&service_url("books", "/books")).await {
                Ok((200, body)) => json_body(StatusCode::OK, body),
                Ok((status, _)) => failed(&format!("books answered {status}")),
                Err(e) => failed(&format!("books: {e:#}")),
            };
        }
        _ => return text(StatusCode::NOT_FOUND, "web serves / and /books\n"),
    }
    let n = next.fetch_add(1, Ordering::Relaxed);
    let id = n % BOOKS.len() as u64 + 1;
    let book: serde_json::Value = match proxy
        .get(&service_url("books", &format!("/books/{id}")))
        .await
    {
        Ok((200, body)) => serde_json::from_slice(&body).unwrap_or_default(),
        Ok((status, _)) => return failed(&format!("books answered {status}")),
        Err(e) => return failed(&format!("books: {e:#}")),
    };
    let author_id = book["author_id"].as_u64().unwrap_or(1);
    let author: serde_json::Value = match proxy
        .get(&service_url("authors", &format!("/authors/{author_id}")))
        .await
    {
        Ok((200, body)) => serde_json::from_slice(&body).unwrap_or_default(),
        Ok((status, _)) => return failed(&format!("authors answered {status}")),
        Err(e) => return failed(&format!("authors: {e:#}")),
    };
    json(StatusCode::OK, &json!({ "book": book, "author": author }))
}

fn books(version: &str, path: &str) -> Rsp {
    let book = |(id, title, author_id): (u64, &str, u64)| {
        json!({
            "id": id,
            "title": title,
            "author_id": author_id,
            "served_by": format!("books-{version}"),
        })
    };
    if path == "/books" {
        let all: Vec<_> = BOOKS.into_iter().map(book).collect();
        return json(StatusCode::OK, &json!(all));
    }
    match path
        .strip_prefix("/books/")
        .and_then(|id| id.parse::<u64>().ok())
        .and_then(|id| BOOKS.into_iter().find(|b| b.0 == id))
    {
        Some(b) => json(StatusCode::OK, &book(b)),
        None => text(StatusCode::NOT_FOUND, "no such book\n"),
    }
}

fn authors(served: &AtomicU64, path: &str) -> Rsp {
    let Some(author) = path
        .strip_prefix("/authors/")
        .and_then(|id| id.parse::<u64>().ok())
        .and_then(|id| AUTHORS.into_iter().find(|a| a.0 == id))
    else {
        return text(StatusCode::NOT_FOUND, "no such author\n");
    };
    if served.fetch_add(1, Ordering::Relaxed) % FAILURE_EVERY == FAILURE_EVERY - 1 {
        return json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({ "error": "authors fails 1 request in 20 on purpose" }),
        );
    }
    json(StatusCode::OK, &json!({ "id": author.0, "name": author.1 }))
}

fn failed(why: &str) -> Rsp {
    json(StatusCode::INTERNAL_SERVER_ERROR, &json!({ "error": why }))
}

fn json(status: StatusCode, value: &serde_json::Value) -> Rsp {
    let mut body = value.to_string();
    body.push('\n');
    json_body(status, Bytes::from(body))
}

fn json_body(status: StatusCode, body: Bytes) -> Rsp {
    let mut rsp = Response::new(Full::new(body));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    rsp
}

fn text(status: StatusCode, body: &'static str) -> Rsp {
    let mut rsp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *rsp.status_mut() = status;
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authors_fails_one_request_in_twenty() {
        let served = AtomicU64::new(0);
        let failures = (0..200)
            .filter(|_| {
                authors(&served, "/authors/1").status() == StatusCode::INTERNAL_SERVER_ERROR
            })
            .count();
        assert_eq!(failures, 10);
        assert_eq!(
            authors(&served, "/authors/99").status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn books_answers_ids_and_the_list() {
        assert_eq!(books("v1", "/books/3").status(), StatusCode::OK);
        assert_eq!(books("v1", "/books").status(), StatusCode::OK);
        assert_eq!(books("v1", "/books/x").status(), StatusCode::NOT_FOUND);
    }
}
