//! Field-path validation errors shared by every resource in this crate.

use std::fmt;

/// One problem found in a resource, tied to the field that caused it so an
/// operator can fix the manifest without guessing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON-style path of the offending field, e.g. `spec.routes[2].condition.pathRegex`.
    pub path: String,
    /// Human-readable description of what is wrong.
    pub message: String,
}

impl FieldError {
    /// Builds an error for `path`; a helper so validators stay terse.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one resource. Validators report all problems at
/// once so a user fixes a manifest in one round trip instead of several.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors {
    /// The individual problems, in the order the fields appear.
    pub errors: Vec<FieldError>,
}

impl ValidationErrors {
    /// True when any recorded problem is about exactly `path`; handy for
    /// callers (and tests) that react to one specific field.
    pub fn has_path(&self, path: &str) -> bool {
        self.errors.iter().any(|e| e.path == path)
    }

    /// Turns a list of problems into `Ok(())` when it is empty.
    pub fn into_result(errors: Vec<FieldError>) -> Result<(), Self> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Self { errors })
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(f, "{n} problem{}: ", if n == 1 { "" } else { "s" })?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
