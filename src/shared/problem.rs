//! What is wrong with an object, and what a condition reports: one typed shape for
//! status messages, Events and admission refusals, so each says the same thing.

use std::fmt;

/// Something wrong with an object, as its owner reads it: the field (a path as users
/// write it, `spec.toolConfigRef`; empty when no single field is at fault) and what
/// is wrong or what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }

    /// A problem no single field is at fault for.
    pub fn general(message: impl Into<String>) -> Self {
        Self { path: String::new(), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Reads `value` as `T`; a value of the wrong shape is a problem at its field path
/// below `base` (the value itself when the error is at its top).
pub fn typed<T: serde::de::DeserializeOwned>(value: &serde_json::Value, base: &str) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { base.to_string() } else { format!("{base}.{path}") };
        Problem::at(field, e.into_inner().to_string())
    })
}

/// One condition as a controller decided it: its type and reason are fixed names
/// (they are matched by users' tooling), the message is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionReport {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl ConditionReport {
    pub fn new(type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Self { type_, status, reason, message: message.into() }
    }

    /// The condition's status as the API writes it.
    pub fn status_str(&self) -> &'static str {
        if self.status { "True" } else { "False" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_reads_as_its_path_then_what_is_wrong() {
        assert_eq!(
            Problem::at("spec.toolConfigRef", "MCPToolConfig t not found").to_string(),
            "spec.toolConfigRef: MCPToolConfig t not found"
        );
        assert_eq!(
            Problem::general("authorization policies are not carried out").to_string(),
            "authorization policies are not carried out"
        );
        assert_eq!(ConditionReport::new("Ready", false, "Failed", "x").status_str(), "False");
    }
}
