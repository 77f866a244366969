//! Placeholder: filled in by the metrics-core work.
