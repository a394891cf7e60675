//! Leader election on a coordination.k8s.io Lease. Every replica serves the webhook
//! and probes; only the lease holder reconciles. Optimistic concurrency
//! (resourceVersion on replace) decides races; a holder that cannot renew within the
//! renew deadline steps down.
//!
//! Expiry is measured on this replica's own clock from the moment it last saw the
//! lease record change, never by comparing the holder's `renewTime` with the local
//! time: the two machines' clocks may disagree by more than a lease duration.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseSettings {
    pub fn new(name: &str, namespace: &str, identity: String, lease_seconds: u64) -> Self {
        let lease_duration = Duration::from_secs(lease_seconds.max(2));
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: (lease_duration / 7).max(Duration::from_millis(500)),
            lease_duration,
        }
    }
}

/// What this replica last saw of the lease record, and when by its own clock.
#[derive(Debug, Default)]
pub struct LeaseObserver {
    record: Option<(Option<String>, Option<MicroTime>, Option<i32>)>,
    seen_at: Option<Instant>,
}

impl LeaseObserver {
    /// Notes what the lease says at `now` and answers whether `identity` may take it:
    /// it is free, ours, or its record has not changed for a whole lease duration.
    pub fn may_acquire(&mut self, spec: &LeaseSpec, identity: &str, now: Instant) -> bool {
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        if holder.is_empty() || holder == identity {
            return true;
        }
        let record = (spec.holder_identity.clone(), spec.renew_time.clone(), spec.lease_duration_seconds);
        if self.record.as_ref() != Some(&record) {
            self.record = Some(record);
            self.seen_at = Some(now);
        }
        let duration = Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15));
        self.seen_at.is_some_and(|seen| now.saturating_duration_since(seen) > duration)
    }
}

/// Tries once to acquire or renew. Ok(true) means we hold the lease now.
async fn try_acquire(api: &Api<Lease>, s: &LeaseSettings, observer: &mut LeaseObserver) -> Result<bool, kube::Error> {
    let now = jiff::Timestamp::now();
    let secs = i32::try_from(s.lease_duration.as_secs()).unwrap_or(i32::MAX);
    match api.get_opt(&s.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(s.name.clone()), namespace: Some(s.namespace.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(s.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            if !observer.may_acquire(&spec, &s.identity, Instant::now()) {
                return Ok(false);
            }
            let taking_over = spec.holder_identity.as_deref() != Some(s.identity.as_str());
            let mut next = spec.clone();
            next.holder_identity = Some(s.identity.clone());
            next.lease_duration_seconds = Some(secs);
            next.renew_time = Some(MicroTime(now));
            if taking_over {
                next.acquire_time = Some(MicroTime(now));
                next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            lease.spec = Some(next);
            // resourceVersion is kept, so a concurrent writer makes this fail with 409.
            match api.replace(&s.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Runs the election forever, publishing `true` while this replica leads. Once
/// leadership is lost the sender publishes `false` and the loop ends: the caller stops
/// reconciling (and exits, as a fresh process re-enters the election cleanly).
pub async fn run(client: Client, s: LeaseSettings, tx: watch::Sender<bool>, gauge: prometheus::IntGauge) {
    let api: Api<Lease> = Api::namespaced(client, &s.namespace);
    let mut leading = false;
    let mut last_renew = tokio::time::Instant::now();
    let mut observer = LeaseObserver::default();
    loop {
        match try_acquire(&api, &s, &mut observer).await {
            Ok(true) => {
                last_renew = tokio::time::Instant::now();
                if !leading {
                    info!(lease = %s.name, namespace = %s.namespace, identity = %s.identity, "acquired leadership");
                    leading = true;
                    gauge.set(1);
                    let _ = tx.send(true);
                }
            }
            Ok(false) => {
                if leading {
                    warn!(lease = %s.name, "another replica took the lease; stepping down");
                    break;
                }
            }
            Err(e) => {
                warn!(lease = %s.name, error = %e, "lease update failed");
                if leading && last_renew.elapsed() > s.renew_deadline {
                    warn!(lease = %s.name, "could not renew within the renew deadline; stepping down");
                    break;
                }
            }
        }
        tokio::time::sleep(s.retry_period).await;
    }
    gauge.set(0);
    let _ = tx.send(false);
}

/// Gives the lease up if this replica holds it, so another takes it at its next try
/// instead of waiting a whole lease duration: called on shutdown, once this replica
/// has stopped writing.
pub async fn release(client: Client, s: &LeaseSettings) -> Result<bool, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client, &s.namespace);
    let Some(mut lease) = api.get_opt(&s.name).await? else {
        return Ok(false);
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(s.identity.as_str()) {
        return Ok(false);
    }
    *spec = released(spec.clone(), jiff::Timestamp::now());
    match api.replace(&s.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        // Someone else wrote it meanwhile: it is not ours to give up any more.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// The lease record once given up: no holder, and a one-second duration for
/// elections that only look at expiry.
fn released(spec: LeaseSpec, now: jiff::Timestamp) -> LeaseSpec {
    LeaseSpec { holder_identity: None, lease_duration_seconds: Some(1), renew_time: Some(MicroTime(now)), ..spec }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_lease_is_taken_at_once_by_the_next_replica() {
        let held = spec("old", "2026-01-01T00:00:00Z", 15);
        let released = released(held, jiff::Timestamp::now());
        assert_eq!(released.holder_identity, None);
        assert!(LeaseObserver::default().may_acquire(&released, "new", Instant::now()));
    }

    fn spec(holder: &str, renewed: &str, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed.parse().unwrap())),
            lease_duration_seconds: Some(secs),
            ..Default::default()
        }
    }

    #[test]
    fn free_or_own_leases_are_taken_at_once() {
        let now = Instant::now();
        assert!(LeaseObserver::default().may_acquire(&LeaseSpec::default(), "me", now), "empty lease");
        assert!(LeaseObserver::default().may_acquire(&spec("me", "2000-01-01T00:00:00Z", 15), "me", now), "renew own");
    }

    #[test]
    fn a_holder_whose_clock_is_30s_ahead_is_not_waited_on_forever() {
        // The holder stamped renewTime 30 s in our future, then died.
        let ahead = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(30)).to_string();
        let lease = spec("other", &ahead, 15);
        let mut observer = LeaseObserver::default();
        let t0 = Instant::now();
        assert!(!observer.may_acquire(&lease, "me", t0), "held when first seen");
        assert!(!observer.may_acquire(&lease, "me", t0 + Duration::from_secs(10)), "within a lease duration");
        assert!(observer.may_acquire(&lease, "me", t0 + Duration::from_secs(16)), "expired by our own clock, whatever renewTime says");
    }

    #[test]
    fn a_live_holder_whose_clock_is_behind_keeps_its_lease() {
        // renewTime looks a minute old by our clock, but the holder keeps renewing.
        let mut observer = LeaseObserver::default();
        let t0 = Instant::now();
        let behind = |s: i64| (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60 - s)).to_string();
        for step in 0..10 {
            let at = t0 + Duration::from_secs(5 * step);
            assert!(!observer.may_acquire(&spec("other", &behind(5 * step as i64), 15), "me", at), "renewed at step {step}");
        }
    }
}
