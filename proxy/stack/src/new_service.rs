//! The [`NewService`] trait: one service per target, built once.

/// Builds a service for a target (linkerd2-proxy's `NewService`): stacks are built per target,
/// once, and the built service then serves every request for that target.
///
/// Unlike [`tower::MakeService`], building is synchronous and infallible: anything slow or
/// fallible (resolving, connecting) belongs inside the built service, where readiness can
/// express it.
pub trait NewService<T> {
    /// The service built for a target.
    type Service;

    /// Builds the service for `target`.
    fn new_service(&self, target: T) -> Self::Service;
}

// === impl Fn ===

/// Any `Fn(T) -> S` is a `NewService`, so a closure can end a stack (or stand in for one in
/// tests) without a named type.
impl<F, T, S> NewService<T> for F
where
    F: Fn(T) -> S,
{
    type Service = S;

    fn new_service(&self, target: T) -> S {
        (self)(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closures_are_new_services() {
        let new_greeter = |name: &str| format!("hello, {name}");
        assert_eq!(new_greeter.new_service("web"), "hello, web");
        assert_eq!(new_greeter.new_service("db"), "hello, db");
    }
}
