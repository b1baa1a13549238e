//! The cluster-wide reboot lock: `concurrency` slots, each a
//! `coordination.k8s.io/v1` Lease named `ferry-reboot-<i>`. A node may take a
//! slot that is absent, free (no holder), its own, or expired; every write
//! is a create (409: someone else won) or a PUT carrying the
//! `resourceVersion` read (409: lost the race), so two nodes never both
//! believe they hold a slot.
//!
//! Expiry never compares wall clocks of different nodes (a board without a
//! real-time clock may run an hour ahead before NTP): another node's Lease
//! is expired only once *this* node has seen its record unchanged (same
//! `resourceVersion`, holder, renew time) for a full `leaseDurationSeconds`
//! on its own monotonic clock, client-go's leader-election rule
//! ([`Observer`]). Wall time is only written, as `renewTime`, for humans.
//!
//! The decision ([`judge`]) and the Lease edits are pure and take their
//! times as values; the async functions at the bottom do the API calls.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::client::{refused, Kube};
use crate::error::Error;

pub(crate) fn lease_name(slot: u32) -> String {
    format!("ferry-reboot-{slot}")
}

/// What a Lease means for node `me` at time `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LeaseState {
    Absent,
    Free,
    Mine,
    Expired {
        holder: String,
    },
    /// Held by someone else, for at most `left` more seconds of this
    /// node's own clock if its record stays unchanged.
    Held {
        holder: String,
        left: u64,
    },
}

/// How long this node has seen each Lease record unchanged, on its own
/// monotonic clock (times are given as the `Duration` since a fixed start).
#[derive(Debug, Default)]
pub struct Observer {
    seen: HashMap<String, (String, Duration)>,
}

impl Observer {
    /// Note the Lease `name` as read at `mono`; returns how long its record
    /// has been unchanged (zero the first time or after any change).
    pub(crate) fn observe(
        &mut self,
        name: &str,
        lease: Option<&Value>,
        mono: Duration,
    ) -> Duration {
        let record = lease.map_or_else(String::new, |l| {
            format!(
                "{}|{}|{}",
                l["metadata"]["resourceVersion"].as_str().unwrap_or(""),
                l["spec"]["holderIdentity"].as_str().unwrap_or(""),
                l["spec"]["renewTime"].as_str().unwrap_or("")
            )
        });
        match self.seen.get(name) {
            Some((r, since)) if *r == record => mono.saturating_sub(*since),
            _ => {
                self.seen.insert(name.to_string(), (record, mono));
                Duration::ZERO
            }
        }
    }
}

/// Decide what the Lease (`None`: it does not exist) means for `me`, its
/// record having been seen unchanged for `unchanged_for` (see [`Observer`]).
pub(crate) fn judge(lease: Option<&Value>, me: &str, unchanged_for: Duration) -> LeaseState {
    let Some(lease) = lease else {
        return LeaseState::Absent;
    };
    let spec = &lease["spec"];
    let holder = spec["holderIdentity"].as_str().unwrap_or("");
    if holder.is_empty() {
        return LeaseState::Free;
    }
    if holder == me {
        return LeaseState::Mine;
    }
    // the holder renews by rewriting the record; unchanged for a whole
    // lease duration on this node's clock, it is gone
    let secs = spec["leaseDurationSeconds"].as_u64().unwrap_or(0);
    if unchanged_for >= Duration::from_secs(secs) {
        LeaseState::Expired {
            holder: holder.to_string(),
        }
    } else {
        LeaseState::Held {
            holder: holder.to_string(),
            left: secs - unchanged_for.as_secs(),
        }
    }
}

/// A new Lease held by `me`.
pub(crate) fn new_lease(namespace: &str, name: &str, me: &str, secs: u64, now: Duration) -> Value {
    let t = micro_time(now);
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "ferry"}},
        "spec": {"holderIdentity": me, "leaseDurationSeconds": secs, "acquireTime": t, "renewTime": t, "leaseTransitions": 0}
    })
}

/// `lease` (as read, with its resourceVersion) taken over or renewed by `me`.
pub(crate) fn taken(lease: &Value, me: &str, secs: u64, now: Duration) -> Value {
    let mut l = lease.clone();
    let t = micro_time(now);
    let changed = l["spec"]["holderIdentity"].as_str() != Some(me);
    let spec = &mut l["spec"];
    if changed {
        let n = spec["leaseTransitions"].as_i64().unwrap_or(0);
        spec["leaseTransitions"] = json!(n + 1);
        spec["acquireTime"] = json!(t);
    }
    spec["holderIdentity"] = json!(me);
    spec["leaseDurationSeconds"] = json!(secs);
    spec["renewTime"] = json!(t);
    l
}

/// `lease` with no holder.
pub(crate) fn released(lease: &Value) -> Value {
    let mut l = lease.clone();
    if let Some(spec) = l.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("holderIdentity");
    }
    l
}

// ---- time: RFC 3339 as the API writes it (MicroTime), Unix seconds inside ----

#[cfg(test)]
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2024-05-01T10:00:00.123456Z` for a time since the Unix epoch.
pub fn micro_time(since_epoch: Duration) -> String {
    let s = since_epoch.as_secs() as i64;
    let (y, mo, d) = civil_from_days(s.div_euclid(86_400));
    let r = s.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        r / 3600,
        r / 60 % 60,
        r % 60,
        since_epoch.subsec_micros()
    )
}

/// Unix seconds of an RFC 3339 time (`Z` or `±hh:mm`; fractions ignored).
#[cfg(test)]
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        rest = &f[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            sign * (rest.get(1..3)?.parse::<i64>().ok()? * 3600
                + rest.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

pub fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

// ---- API calls ----

/// The outcome of one acquisition round.
#[derive(Debug)]
pub(crate) enum Acquire {
    /// This node holds slot `n`.
    Got(u32),
    /// Every slot is held by someone else: `(holder, seconds left at most)` per slot.
    Busy(Vec<(String, u64)>),
}

fn path(namespace: &str, name: Option<&str>) -> String {
    let base = format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases");
    match name {
        Some(n) => format!("{base}/{n}"),
        None => base,
    }
}

async fn read(kube: &Kube, namespace: &str, name: &str) -> Result<Option<Value>, Error> {
    let p = path(namespace, Some(name));
    let r = kube.call("GET", &p, None).await?;
    match r.status {
        404 => Ok(None),
        _ if r.ok() => Ok(Some(r.body)),
        _ => Err(refused("GET", &p, &r)),
    }
}

/// Write a Lease; `Ok(false)` when another writer got there first (409).
async fn write(
    kube: &Kube,
    namespace: &str,
    name: &str,
    body: &Value,
    create: bool,
) -> Result<bool, Error> {
    let (method, p) = if create {
        ("POST", path(namespace, None))
    } else {
        ("PUT", path(namespace, Some(name)))
    };
    let r = kube.call(method, &p, Some(body)).await?;
    match r.status {
        409 => Ok(false),
        _ if r.ok() => Ok(true),
        _ => Err(refused(method, &p, &r)),
    }
}

/// One round: keep a slot this node already holds, else take the first free
/// or expired one. Never holds two slots.
pub(crate) async fn try_acquire(kube: &Kube, o: &super::RebootOptions) -> Result<Acquire, Error> {
    let (namespace, me, slots, secs) = (
        o.namespace.as_str(),
        o.node.as_str(),
        o.concurrency,
        o.lease_seconds,
    );
    let (now, mono, observer) = (since_epoch((o.wall)()), o.started.elapsed(), &o.observer);
    let mut leases = Vec::new();
    for slot in 0..slots.max(1) {
        let name = lease_name(slot);
        let l = read(kube, namespace, &name).await?;
        let unchanged = observer
            .lock()
            .map(|mut o| o.observe(&name, l.as_ref(), mono))
            .unwrap_or_default();
        let state = judge(l.as_ref(), me, unchanged);
        leases.push((slot, l, state));
    }
    // Our own slot first (we may have rebooted while holding it), then the rest in order.
    leases.sort_by_key(|(slot, _, state)| (*state != LeaseState::Mine, *slot));
    let mut busy = Vec::new();
    for (slot, lease, state) in &leases {
        let name = lease_name(*slot);
        let won = match (state, lease) {
            (LeaseState::Held { holder, left }, _) => {
                busy.push((holder.clone(), *left));
                continue;
            }
            (_, None) => {
                write(
                    kube,
                    namespace,
                    &name,
                    &new_lease(namespace, &name, me, secs, now),
                    true,
                )
                .await?
            }
            (_, Some(l)) => write(kube, namespace, &name, &taken(l, me, secs, now), false).await?,
        };
        if won {
            if let LeaseState::Expired { holder } = state {
                tracing::warn!(lease = %name, previous = %holder, "took over an expired reboot lease");
            }
            return Ok(Acquire::Got(*slot));
        }
        busy.push(("(lost a race)".to_string(), 0));
    }
    Ok(Acquire::Busy(busy))
}

/// Renew the slot this node holds; an error if it is no longer ours.
pub(crate) async fn renew(
    kube: &Kube,
    namespace: &str,
    me: &str,
    slot: u32,
    secs: u64,
    now: SystemTime,
) -> Result<(), Error> {
    let name = lease_name(slot);
    let lease = read(kube, namespace, &name).await?;
    let lost = || {
        Error::Cluster(format!(
            "reboot lease {namespace}/{name} is no longer held by {me}"
        ))
    };
    match (judge(lease.as_ref(), me, Duration::ZERO), lease) {
        (LeaseState::Mine, Some(l)) => {
            if write(
                kube,
                namespace,
                &name,
                &taken(&l, me, secs, since_epoch(now)),
                false,
            )
            .await?
            {
                Ok(())
            } else {
                Err(lost())
            }
        }
        _ => Err(lost()),
    }
}

/// Give up every slot this node holds (none held is fine). A slot taken over
/// by another node meanwhile is left alone.
pub(crate) async fn release(
    kube: &Kube,
    namespace: &str,
    me: &str,
    slots: u32,
) -> Result<(), Error> {
    for slot in 0..slots.max(1) {
        let name = lease_name(slot);
        for _attempt in 0..3 {
            let Some(l) = read(kube, namespace, &name).await? else {
                break;
            };
            if l["spec"]["holderIdentity"].as_str() != Some(me) {
                break;
            }
            if write(kube, namespace, &name, &released(&l), false).await? {
                tracing::info!(lease = %name, "reboot lease released");
                break;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renew: Option<&str>, secs: Option<i64>) -> Value {
        let mut spec = serde_json::Map::new();
        if let Some(h) = holder {
            spec.insert("holderIdentity".into(), json!(h));
        }
        if let Some(r) = renew {
            spec.insert("renewTime".into(), json!(r));
        }
        if let Some(s) = secs {
            spec.insert("leaseDurationSeconds".into(), json!(s));
        }
        json!({"metadata": {"name": "ferry-reboot-0", "resourceVersion": "7"}, "spec": spec})
    }

    #[test]
    fn who_may_take_a_lease() {
        let t0 = "2024-05-01T10:00:00.000000Z";
        let secs = Duration::from_secs;
        let held = |left| LeaseState::Held {
            holder: "b".into(),
            left,
        };
        let expired = LeaseState::Expired { holder: "b".into() };
        // (lease, seen unchanged for, decision): the renew time written in
        // the lease never matters, only this node's own observation
        let table: Vec<(Option<Value>, Duration, LeaseState)> = vec![
            (None, secs(0), LeaseState::Absent),
            (
                Some(lease(None, Some(t0), Some(60))),
                secs(0),
                LeaseState::Free,
            ),
            (
                Some(lease(Some(""), Some(t0), Some(60))),
                secs(0),
                LeaseState::Free,
            ),
            (
                Some(lease(Some("a"), Some(t0), Some(60))),
                secs(9999),
                LeaseState::Mine,
            ),
            (
                Some(lease(Some("b"), Some(t0), Some(60))),
                secs(0),
                held(60),
            ),
            (
                Some(lease(Some("b"), Some(t0), Some(60))),
                secs(59),
                held(1),
            ),
            (
                Some(lease(Some("b"), Some(t0), Some(60))),
                secs(60),
                expired.clone(),
            ),
            // a renew time from 2020 or from the future: the same
            (
                Some(lease(Some("b"), Some("2020-01-01T00:00:00Z"), Some(60))),
                secs(0),
                held(60),
            ),
            (
                Some(lease(Some("b"), Some("2099-01-01T00:00:00Z"), Some(60))),
                secs(60),
                expired.clone(),
            ),
            (
                Some(lease(Some("b"), Some("garbage"), Some(60))),
                secs(1),
                held(59),
            ),
            (
                Some(lease(Some("b"), Some(t0), None)),
                secs(0),
                expired.clone(),
            ),
        ];
        for (i, (l, seen, want)) in table.into_iter().enumerate() {
            assert_eq!(judge(l.as_ref(), "a", seen), want, "row {i}");
        }
    }

    #[test]
    fn the_observer_restarts_on_every_change() {
        let mut o = Observer::default();
        let l = lease(Some("b"), Some("2024-05-01T10:00:00Z"), Some(60));
        let secs = Duration::from_secs;
        assert_eq!(o.observe("x", Some(&l), secs(100)), secs(0));
        assert_eq!(o.observe("x", Some(&l), secs(130)), secs(30));
        // renewed: a new resourceVersion and renew time
        let mut r = l.clone();
        r["metadata"]["resourceVersion"] = json!("8");
        assert_eq!(o.observe("x", Some(&r), secs(150)), secs(0));
        assert_eq!(o.observe("x", Some(&r), secs(215)), secs(65));
        // another lease is observed on its own
        assert_eq!(o.observe("y", Some(&r), secs(215)), secs(0));
        assert_eq!(o.observe("x", None, secs(300)), secs(0));
    }

    #[test]
    fn take_over_keeps_the_resource_version_and_counts_transitions() {
        let now = Duration::from_secs(1_714_557_600);
        let l = lease(Some("b"), Some("2020-01-01T00:00:00Z"), Some(60));
        let t = taken(&l, "a", 900, now);
        assert_eq!(t["metadata"]["resourceVersion"], "7");
        assert_eq!(t["spec"]["holderIdentity"], "a");
        assert_eq!(t["spec"]["leaseDurationSeconds"], 900);
        assert_eq!(t["spec"]["renewTime"], "2024-05-01T10:00:00.000000Z");
        assert_eq!(t["spec"]["leaseTransitions"], 1);
        let renewed = taken(&t, "a", 900, now + Duration::from_secs(5));
        assert_eq!(renewed["spec"]["leaseTransitions"], 1);
        assert_eq!(
            renewed["spec"]["acquireTime"],
            "2024-05-01T10:00:00.000000Z"
        );
        assert_eq!(
            judge(Some(&released(&renewed)), "b", Duration::ZERO),
            LeaseState::Free
        );
        let n = new_lease("kube-system", "ferry-reboot-1", "a", 60, now);
        assert_eq!(
            judge(Some(&n), "b", Duration::from_secs(10)),
            LeaseState::Held {
                holder: "a".into(),
                left: 50
            }
        );
    }

    #[test]
    fn times_round_trip() {
        for s in [0u64, 951_782_400, 1_714_557_600, 4_102_444_799] {
            let d = Duration::from_secs(s) + Duration::from_micros(123_456);
            let text = micro_time(d);
            assert_eq!(parse_time(&text), Some(s as i64), "{text}");
        }
        assert_eq!(
            micro_time(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_time("1969-12-31T23:59:59Z"), Some(-1));
        for bad in [
            "",
            "2024-13-01T00:00:00Z",
            "2024-05-01 10:00:00Z",
            "2024-05-01T10:00:00",
            "2024-05-01T10:00:00+0200",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
