//! The body type used throughout the HTTP stack.

use crate::BoxError;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

/// A type-erased streaming body. Bodies are streamed frame by frame (never
/// collected), so a multi-gigabyte upload flows with bounded memory.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> BoxBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> BoxBody {
    boxed(Full::new(bytes.into()))
}

/// An empty body.
pub fn empty() -> BoxBody {
    boxed(Empty::new())
}
