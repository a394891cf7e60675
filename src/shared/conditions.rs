//! Conditions, as every kind of the API writes them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition that keeps its lastTransitionTime from `previous` while its status
/// holds (so an unchanged world yields an identical status).
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}
