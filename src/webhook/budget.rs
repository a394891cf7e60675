//! The memory budget for reviews in flight. A review is let in by the size its body
//! declares, then, once read, by what parsing it will take: JSON text grows several
//! hundred bytes per value once parsed into a tree, so a 7 MiB body of tiny values
//! costs far more than one of long strings. A review that would take more than the
//! whole budget is refused; one that finds no room within a moment is answered 503,
//! its body unread.

use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::{Semaphore, SemaphorePermit};

/// KiB that reviews being read and parsed may take at once: well inside the chart's
/// 128 MiB limit beside the caches. Two of the largest reviews (7 MiB, let in at
/// twice that) fit at once, or four of the largest the API server sends for an
/// MCPServer update (object and old object, 1.5 MiB each).
pub const BUDGET_KIB: u32 = 32 * 1024;

/// What one parsed JSON value is counted as (a tree node, its map or vector slot and
/// allocator overhead; measured near 400 bytes for small objects).
const VALUE_BYTES: usize = 512;

/// How long a review may wait for room.
const WAIT: Duration = Duration::from_secs(1);

pub struct ReviewBudget(Semaphore);

/// Why a review was not let in.
pub struct Refused {
    pub code: StatusCode,
    pub message: String,
}

impl Default for ReviewBudget {
    fn default() -> Self {
        Self(Semaphore::new(BUDGET_KIB as usize))
    }
}

impl ReviewBudget {
    /// Room for a body declaring `bytes`: the body, and its strings once parsed.
    pub async fn admit(&self, bytes: usize) -> Result<SemaphorePermit<'_>, Refused> {
        self.reserve(kib(bytes.saturating_mul(2))).await
    }

    /// Grows `permit` to what parsing `body` takes; refuses a body that would take
    /// more than the whole budget.
    pub async fn for_parsing<'a>(&'a self, permit: &mut SemaphorePermit<'a>, body: &[u8]) -> Result<(), Refused> {
        let values = json_values(body);
        let need = kib(body.len().saturating_mul(2).saturating_add(values.saturating_mul(VALUE_BYTES)));
        if need > BUDGET_KIB {
            return Err(Refused {
                code: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!(
                    "the AdmissionReview holds {values} JSON values, more than this webhook parses (an MCPServer has hundreds)"
                ),
            });
        }
        let held = u32::try_from(permit.num_permits()).unwrap_or(BUDGET_KIB);
        if need > held {
            permit.merge(self.reserve(need - held).await?);
        }
        Ok(())
    }

    async fn reserve(&self, kib: u32) -> Result<SemaphorePermit<'_>, Refused> {
        match tokio::time::timeout(WAIT, self.0.acquire_many(kib)).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Refused { code: StatusCode::SERVICE_UNAVAILABLE, message: "the webhook is shutting down".into() }),
            Err(_) => Err(Refused {
                code: StatusCode::SERVICE_UNAVAILABLE,
                message: "the webhook is at its memory budget for reviews in flight; try again".into(),
            }),
        }
    }
}

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX).clamp(1, BUDGET_KIB.saturating_add(1))
}

/// How many values (objects, arrays, strings, numbers, literals) the JSON text holds,
/// counted without parsing: every value but the first follows a `[`, `,` or `:`
/// outside a string. (On text that is not JSON the count is only an estimate, and
/// the parser refuses it anyway.)
pub fn json_values(text: &[u8]) -> usize {
    let (mut values, mut in_string, mut escaped) = (1, false, false);
    for &b in text {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b',' | b':' => values += 1,
                _ => {}
            }
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_counted_outside_strings_only() {
        assert_eq!(json_values(br#"{"a":1}"#), 2);
        assert_eq!(json_values(br#"[1,2,3]"#), 4, "the array and three numbers, plus the empty slot of `[`");
        assert_eq!(json_values(br#"{"k,:[":"v\",:[x"}"#), 2, "separators inside strings, escaped quotes");
        let tiny = format!("[{}]", vec!["1"; 1000].join(","));
        assert!(json_values(tiny.as_bytes()) > 1000);
    }

    #[tokio::test]
    async fn a_body_of_tiny_values_costs_more_than_its_size_and_too_many_are_refused() {
        let budget = ReviewBudget::default();
        let strings = format!("[\"{}\"]", "x".repeat(1024 * 1024));
        let mut permit = budget.admit(strings.len()).await.ok().unwrap();
        budget.for_parsing(&mut permit, strings.as_bytes()).await.ok().unwrap();
        assert!(permit.num_permits() < 4 * 1024, "long strings: about twice the body");
        drop(permit);

        let tiny = format!("[{}]", vec!["1"; 1024 * 1024].join(","));
        let mut permit = budget.admit(tiny.len()).await.ok().unwrap();
        let refused = budget.for_parsing(&mut permit, tiny.as_bytes()).await.expect_err("a million values is refused");
        assert_eq!(refused.code, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(refused.message.contains("1048577 JSON values"), "{}", refused.message);
    }
}
