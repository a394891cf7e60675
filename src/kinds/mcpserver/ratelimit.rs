//! `spec.rateLimiting`: token buckets the proxy keeps in the server's Redis session
//! storage, for every `tools/call` (shared, per user, per tool). The shape is the
//! reference CRD's; the runner reads it back from the RunConfig in the same shape, with
//! each refill period written as Go prints a duration.

use crate::shared::problem::Problem;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Rate limits on `tools/call`; needs `sessionStorage` with provider `redis`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.shared) || has(self.perUser) || (has(self.tools) && size(self.tools) > 0)",
    "message": "at least one of shared, perUser, or tools must be configured"
}]))]
pub struct RateLimitConfig {
    /// One bucket for every caller of this server together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<RateLimitBucket>,
    /// One bucket per authenticated caller (needs oidcConfigRef or externalAuthConfigRef).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_user: Option<RateLimitBucket>,
    /// Further limits on single tools; a call must pass these and the server's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub tools: Vec<ToolRateLimit>,
}

/// A token bucket: `maxTokens` calls at once, refilled evenly over `refillPeriod`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitBucket {
    /// The bucket's size: the most calls allowed in a burst.
    #[schemars(range(min = 1))]
    pub max_tokens: i32,
    /// How long an empty bucket takes to fill again (a Go duration: `30s`, `1m`, `1h`).
    pub refill_period: String,
}

/// The limits on one tool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.shared) || has(self.perUser)",
    "message": "at least one of shared or perUser must be configured"
}]))]
pub struct ToolRateLimit {
    /// The tool's name, as tools/list shows it.
    #[schemars(length(min = 1))]
    pub name: String,
    /// One bucket for every caller of this tool together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<RateLimitBucket>,
    /// One bucket per authenticated caller of this tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_user: Option<RateLimitBucket>,
}

impl RateLimitConfig {
    /// Every bucket, with its path below `spec.rateLimiting`.
    fn buckets_mut(&mut self) -> impl Iterator<Item = (String, &mut RateLimitBucket)> {
        let server = [("shared", self.shared.as_mut()), ("perUser", self.per_user.as_mut())]
            .into_iter()
            .filter_map(|(path, bucket)| Some((path.to_string(), bucket?)));
        let tools = self.tools.iter_mut().enumerate().flat_map(|(i, tool)| {
            [("shared", tool.shared.as_mut()), ("perUser", tool.per_user.as_mut())]
                .into_iter()
                .filter_map(move |(path, bucket)| Some((format!("tools[{i}].{path}"), bucket?)))
        });
        server.chain(tools)
    }

    /// What is wrong with the refill periods, each with its field path below
    /// `spec.rateLimiting`. The API server only knows them as strings; the runner
    /// cannot start with one it cannot read.
    pub fn problems(&self) -> Vec<Problem> {
        // A clone walked with the one bucket iterator there is: these are a few bytes.
        self.clone()
            .buckets_mut()
            .filter_map(|(path, bucket)| {
                refill_period(&bucket.refill_period).err().map(|e| Problem::at(format!("spec.rateLimiting.{path}.refillPeriod"), e))
            })
            .collect()
    }

    /// The limits as the runner reads them: every refill period as Go prints it
    /// (`60s` becomes `1m0s`), as the reference writes them.
    pub fn for_runner(&self) -> Self {
        let mut runner = self.clone();
        for (_, bucket) in runner.buckets_mut() {
            if let Ok(period) = refill_period(&bucket.refill_period) {
                bucket.refill_period = go_duration(period);
            }
        }
        runner
    }

    /// Whether any bucket counts per caller (which needs an authenticated caller).
    pub fn per_user(&self) -> bool {
        self.per_user.is_some() || self.tools.iter().any(|t| t.per_user.is_some())
    }
}

/// Why `spec.rateLimiting` cannot be carried out, as (condition reason, message); None
/// when it can or is not set. Admission refuses both cases; a server stored anyway
/// (the webhook down, or before this release) has its proxy stopped rather than run
/// with limits that would not hold.
pub fn invalid(spec: &crate::kinds::mcpserver::api::MCPServerSpec) -> Option<(&'static str, Problem)> {
    let limits = spec.rate_limiting.as_ref()?;
    if limits.per_user() && spec.oidc_config_ref.is_none() && spec.external_auth_config_ref.is_none() {
        let message = "perUser limits need authenticated callers; set oidcConfigRef or externalAuthConfigRef";
        return Some(("PerUserRequiresAuth", Problem::at("spec.rateLimiting", message)));
    }
    Some(("InvalidRefillPeriod", limits.problems().into_iter().next()?))
}

/// A refill period: a Go duration above zero.
fn refill_period(text: &str) -> Result<std::time::Duration, String> {
    match text.parse::<kube::core::Duration>() {
        Err(e) => Err(format!("{text:?} is not a duration ({e}); write it as Go does, e.g. 30s, 1m or 1h")),
        Ok(d) if d.is_negative() || std::time::Duration::from(d).is_zero() => Err(format!("{text} must be longer than zero")),
        Ok(d) => Ok(d.into()),
    }
}

/// A duration as Go's `time.Duration.String()` prints it: `1h0m0s`, `1m30s`, `1.5s`,
/// `250ms`, `0s`.
pub fn go_duration(d: std::time::Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, scale) = match nanos {
            0..1_000 => ("ns", 1),
            1_000..1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{}{unit}", decimal(nanos, scale));
    }
    let secs = d.as_secs();
    let (hours, minutes) = (secs / 3600, secs / 60 % 60);
    let seconds = decimal(u128::from(secs % 60) * 1_000_000_000 + u128::from(d.subsec_nanos()), 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m{seconds}s"),
    }
}

/// `value / scale` in decimal, without trailing zeros.
fn decimal(value: u128, scale: u128) -> String {
    let (whole, fraction) = (value / scale, value % scale);
    if fraction == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    format!("{whole}.{fraction:0width$}").trim_end_matches('0').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn durations_print_as_go_prints_them() {
        // Each pair checked against Go's time.Duration.String().
        for (d, go) in [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(3600 * 26 + 61), "26h1m1s"),
            (Duration::new(61, 5_000_000), "1m1.005s"),
        ] {
            assert_eq!(go_duration(d), go);
        }
    }

    fn limits(value: serde_json::Value) -> RateLimitConfig {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn refill_periods_are_checked_where_they_are_written() {
        let config = limits(json!({
            "shared": {"maxTokens": 10, "refillPeriod": "1m"},
            "perUser": {"maxTokens": 1, "refillPeriod": "0s"},
            "tools": [{"name": "a", "shared": {"maxTokens": 1, "refillPeriod": "30s"}},
                      {"name": "b", "perUser": {"maxTokens": 1, "refillPeriod": "1 day"}}]
        }));
        let paths: Vec<String> = config.problems().into_iter().map(|p| p.path).collect();
        assert_eq!(paths, ["spec.rateLimiting.perUser.refillPeriod", "spec.rateLimiting.tools[1].perUser.refillPeriod"]);
        assert!(config.problems()[1].message.contains("is not a duration"), "{:?}", config.problems());
        assert!(config.per_user());
    }

    #[test]
    fn the_runner_gets_go_durations_and_nothing_else_changes() {
        let config = limits(json!({"shared": {"maxTokens": 10, "refillPeriod": "60s"},
            "tools": [{"name": "search", "shared": {"maxTokens": 2, "refillPeriod": "90m"}}]}));
        assert!(config.problems().is_empty() && !config.per_user());
        let runner = serde_json::to_value(config.for_runner()).unwrap();
        assert_eq!(
            runner,
            json!({"shared": {"maxTokens": 10, "refillPeriod": "1m0s"},
                   "tools": [{"name": "search", "shared": {"maxTokens": 2, "refillPeriod": "1h30m0s"}}]})
        );
    }
}
