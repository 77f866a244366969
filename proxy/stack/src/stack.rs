//! [`Stack`]: composing layers in the order a reader expects.

use tower::Layer;

/// Composes layers inside-out in reading order, as linkerd2-proxy's `push_*` builders do:
/// `Stack::new(endpoint).push(balance_layer).push(queue_layer).into_inner()`.
///
/// Each `push` wraps everything so far, so the *last* layer pushed is the *outermost* one, the
/// first a request meets. The code reads from the endpoint outwards, and a request travels it
/// bottom to top. This is linkerd2-proxy's convention and the opposite of
/// [`tower::ServiceBuilder`], whose first layer is outermost.
#[derive(Clone, Debug)]
pub struct Stack<S>(S);

// === impl Stack ===

impl<S> Stack<S> {
    /// Starts a stack from its innermost service (or `NewService`).
    pub fn new(inner: S) -> Self {
        Self(inner)
    }

    /// Wraps the stack so far in `layer`, which becomes the new outermost layer.
    pub fn push<L: Layer<S>>(self, layer: L) -> Stack<L::Service> {
        Stack(layer.layer(self.0))
    }

    /// Returns the composed service.
    pub fn into_inner(self) -> S {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::layer::layer_fn;

    #[test]
    fn the_last_layer_pushed_is_outermost() {
        let stack = Stack::new("endpoint")
            .push(layer_fn(|inner| ("balance", inner)))
            .push(layer_fn(|inner| ("queue", inner)))
            .into_inner();
        assert_eq!(stack, ("queue", ("balance", "endpoint")));
    }

    #[test]
    fn an_empty_stack_is_its_inner_service() {
        assert_eq!(Stack::new(7).into_inner(), 7);
    }
}
