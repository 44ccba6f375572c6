//! The agent's per-pod state machine, pure: what it has done for each pod ([`PodState`]), what the checks found wrong
//! ([`Drift`]), and the next step ([`plan`]) given what the control plane says about the pod ([`Observed`]). The
//! driver executes each [`Action`] and feeds the outcome back through [`PodRecord::done`] / [`PodRecord::failed`],
//! the proxy's acks through [`PodRecord::acked`] and the checks' findings through [`PodRecord::found`].
//!
//! Enrolling walks `Captured → Handed → Acked → Enrolled`: capture first (so the pod's traffic is never sent
//! around the proxy once the proxy serves it), then the hand-over, then the annotation once the proxy acked, so the
//! control plane advertises HBONE only for pods whose proxy listens. Leaving walks back: the annotation first (peers
//! stop tunnelling to the pod), then out of the proxy's set (it drains the pod's listeners), then capture.
//!
//! A step that failed waits for its retry time; the other steps of the pod do not (a pod that cannot be patched
//! can still be unenrolled). One action per pod at a time: the driver plans again after executing a round.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use ambit_zds::PodUid;

/// How long after the proxy's ack its in-pod listeners are first checked (they are bound before the ack; this only
/// keeps a check from racing a proxy that is still settling).
pub const LISTENER_GRACE: Duration = Duration::from_secs(2);
/// How long a pod taken out of the proxy's set for a re-hand waits for the proxy's ack of the Del before it is
/// handed again anyway (the ZDS deadline: a proxy that takes longer is disconnected).
pub const REHAND_WAIT: Duration = ambit_zds::DEADLINE;
/// The first delay before a failed step is tried again; it doubles with each failure, up to [`RETRY_MAX`].
pub const RETRY_INITIAL: Duration = Duration::from_millis(500);
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// What the control plane's latest view says about a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// The enrollment rules select the pod ([`crate::enrollment`]).
    pub enrolled: bool,
    /// The pod carries `ambient.istio.io/redirection: enabled`.
    pub annotated: bool,
    /// Capture was found in the pod's namespace though the agent keeps no record of the pod (an agent that died
    /// while releasing it left it behind, where it would keep blocking the pod's TCP).
    pub leftover: bool,
}

/// The proxy's ack of a pod's Add: when it came, and on which ZDS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub at: Instant,
    pub conn: u64,
}

/// What the agent has done for a pod. A pod without a record has had nothing done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Enrolling, but capture is not in place: the last attempt failed (no namespace found, `nft` failed).
    Pending,
    /// Capture is in place; the pod is not in the proxy's set yet.
    Captured,
    /// In the proxy's set; its Add is not acked yet.
    Handed,
    /// Out of the proxy's set to be handed again (its Add failed or its listeners went missing): back in once the
    /// proxy acked the Del, or [`REHAND_WAIT`] after `since`, or at once when no proxy is connected.
    Withdrawn { since: Instant, del_acked: bool },
    /// The proxy acked the Add; the annotation is not patched yet.
    Acked { ack: Ack },
    /// Capture, proxy and annotation in place. `patched_view` is the view current when the annotation was
    /// patched (or found): a later view without it means someone removed it.
    Enrolled { ack: Ack, patched_view: u64 },
    /// Leaving: the annotation is removed; the pod is still in the proxy's set.
    Unpatched,
    /// Leaving: out of the proxy's set; capture may still be in place. It is removed once the proxy acked the Del
    /// (it dropped the pod's listeners, so no connection it proxies loses its return route), or [`REHAND_WAIT`]
    /// after `since`, or at once when no proxy is connected.
    Released { since: Instant, del_acked: bool },
    /// Left: capture removed as of view `view`. Kept while the pod exists, so that a view older than the removal
    /// of the annotation does not start the leave over.
    Left { view: u64 },
}

/// What a check found wrong with a pod. Each kind is repaired by its own action and counted under its own reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// Capture's rules differ from what install leaves (each difference in words).
    Rules(Vec<String>),
    /// The proxy acked the pod but these in-pod listeners are not listening.
    Listeners(Vec<u16>),
    /// The pod's network namespace no longer holds its IP: the sandbox was re-created (or is gone).
    Netns,
}

/// A failed action and when it may be tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    pub action: Action,
    pub at: Instant,
    pub attempts: u32,
}

/// Everything the agent tracks for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRecord {
    pub state: PodState,
    /// What the last check found wrong, until it is repaired.
    pub drift: Option<Drift>,
    pub retry: Option<Retry>,
}

/// What the plan depends on besides the pods: the time, the number of views applied so far, and the ZDS
/// connections open now.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub now: Instant,
    pub view: u64,
    pub connected: &'a BTreeSet<u64>,
}

/// One step for one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Put capture in place in the pod's namespace (left alone if it already is: after an agent restart).
    InstallCapture,
    /// Add the pod to the proxy's set (the proxy gets an Add with its namespace).
    HandToProxy,
    /// Patch `ambient.istio.io/redirection: enabled` on the pod (with its uid).
    PatchEnabled,
    /// Remove the annotation.
    Unpatch,
    /// Take the pod out of the proxy's set (the proxy gets a Del and drops the pod's listeners).
    RemoveFromProxy,
    /// Remove capture from the pod's namespace.
    RemoveCapture,
    /// Install capture again over rules that drifted.
    RepairCapture,
    /// Take the pod out of the proxy's set to hand it again ([`PodState::Withdrawn`]): the session sends a pod's Add
    /// once per change, so a fresh Add needs a Del first.
    Rehand,
}

/// A check to run on a pod: its rules always; its in-pod listeners too when the proxy acked it (`listeners` is the
/// ack the check is made for, so a finding about an older ack is dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub uid: PodUid,
    pub listeners: Option<Ack>,
}

// === impl PodState ===

impl PodState {
    /// Whether the pod belongs in the proxy's set.
    pub fn in_pod_set(&self) -> bool {
        matches!(
            self,
            PodState::Handed | PodState::Acked { .. } | PodState::Enrolled { .. } | PodState::Unpatched
        )
    }

    /// Whether capture is (believed) in place and the pod is enrolling or enrolled, i.e. worth checking.
    pub fn checked(&self) -> bool {
        matches!(
            self,
            PodState::Captured
                | PodState::Handed
                | PodState::Withdrawn { .. }
                | PodState::Acked { .. }
                | PodState::Enrolled { .. }
        )
    }

    /// The proxy's ack the pod holds now, if any.
    pub fn ack(&self) -> Option<Ack> {
        match self {
            PodState::Acked { ack } | PodState::Enrolled { ack, .. } => Some(*ack),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            PodState::Pending => "pending",
            PodState::Captured => "captured",
            PodState::Handed => "handed",
            PodState::Withdrawn { .. } => "withdrawn",
            PodState::Acked { .. } => "acked",
            PodState::Enrolled { .. } => "enrolled",
            PodState::Unpatched => "unpatched",
            PodState::Released { .. } => "released",
            PodState::Left { .. } => "left",
        }
    }
}

impl fmt::Display for PodState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Drift ===

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::Rules(found) => write!(f, "capture rules drifted: {}", found.join("; ")),
            Drift::Listeners(ports) => {
                let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                write!(
                    f,
                    "the proxy's in-pod listeners on {} are not listening",
                    ports.join(", ")
                )
            }
            Drift::Netns => f.write_str("the pod's network namespace no longer holds its IP"),
        }
    }
}

// === impl Action ===

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::InstallCapture => "install capture",
            Action::HandToProxy => "hand to the proxy",
            Action::PatchEnabled => "patch the redirection annotation",
            Action::Unpatch => "remove the redirection annotation",
            Action::RemoveFromProxy => "remove from the proxy",
            Action::RemoveCapture => "remove capture",
            Action::RepairCapture => "repair capture",
            Action::Rehand => "re-hand to the proxy",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Retry ===

impl Retry {
    /// The retry after `action` failed at `now`, following `previous` (the delay doubles while the same action keeps
    /// failing).
    pub fn after(previous: Option<&Retry>, action: Action, now: Instant) -> Retry {
        let attempts = previous.filter(|r| r.action == action).map_or(0, |r| r.attempts) + 1;
        let delay = RETRY_INITIAL.saturating_mul(1 << (attempts - 1).min(16)).min(RETRY_MAX);
        Retry {
            action,
            at: now + delay,
            attempts,
        }
    }
}

// === impl PodRecord ===

impl PodRecord {
    pub fn new(state: PodState) -> Self {
        PodRecord {
            state,
            drift: None,
            retry: None,
        }
    }

    /// The record after `action` succeeded (`None` before: the pod had no record).
    pub fn done(record: Option<PodRecord>, action: Action, ctx: &Context) -> PodRecord {
        let state = record.as_ref().map(|r| r.state.clone());
        let in_set = state.as_ref().is_some_and(PodState::in_pod_set);
        let next = match (action, state) {
            (Action::InstallCapture, _) => PodState::Captured,
            (Action::HandToProxy, _) => PodState::Handed,
            (Action::PatchEnabled, Some(PodState::Acked { ack } | PodState::Enrolled { ack, .. })) => {
                PodState::Enrolled {
                    ack,
                    patched_view: ctx.view,
                }
            }
            (Action::Unpatch, Some(state)) if state.in_pod_set() => PodState::Unpatched,
            (Action::Unpatch | Action::RemoveFromProxy, _) => PodState::Released {
                since: ctx.now,
                del_acked: !in_set,
            },
            (Action::RemoveCapture, _) => PodState::Left { view: ctx.view },
            (Action::Rehand, _) => PodState::Withdrawn {
                since: ctx.now,
                del_acked: false,
            },
            // Repairing leaves the state as it was; a patch is only planned from Acked or Enrolled.
            (Action::RepairCapture | Action::PatchEnabled, state) => state.unwrap_or(PodState::Pending),
        };
        PodRecord::new(next)
    }

    /// The record after `action` failed: the state stays (a pod whose first install failed becomes
    /// [`PodState::Pending`]), the drift stays to be repaired, and the action waits for its retry.
    pub fn failed(record: Option<PodRecord>, action: Action, ctx: &Context) -> PodRecord {
        let mut record = record.unwrap_or_else(|| PodRecord::new(PodState::Pending));
        if action == Action::InstallCapture && matches!(record.state, PodState::Released { .. } | PodState::Left { .. })
        {
            record.state = PodState::Pending;
        }
        record.retry = Some(Retry::after(record.retry.as_ref(), action, ctx.now));
        record
    }

    /// The record after the proxy answered a request about the pod on connection `conn`: an Add acked (`error`
    /// none) moves a handed pod on, to Enrolled at once when the view already shows the annotation (after an agent
    /// restart); a failed Add withdraws the pod to hand it again after a backoff; a Del acked lets a withdrawn pod
    /// come back and a released one lose its capture.
    pub fn acked(
        mut self,
        kind: ambit_zds::RequestKind,
        error: bool,
        conn: u64,
        annotated: bool,
        ctx: &Context,
    ) -> PodRecord {
        use ambit_zds::RequestKind::{Add, Del};
        let ack = Ack { at: ctx.now, conn };
        self.state = match (kind, error, self.state) {
            (Add, false, PodState::Handed) if annotated => PodState::Enrolled {
                ack,
                patched_view: ctx.view,
            },
            (Add, false, PodState::Handed | PodState::Acked { .. }) => PodState::Acked { ack },
            (Add, false, PodState::Enrolled { patched_view, .. }) => PodState::Enrolled { ack, patched_view },
            (Add, true, PodState::Handed | PodState::Acked { .. } | PodState::Enrolled { .. }) => {
                self.retry = Some(Retry::after(self.retry.as_ref(), Action::HandToProxy, ctx.now));
                PodState::Withdrawn {
                    since: ctx.now,
                    del_acked: false,
                }
            }
            (Del, false, PodState::Withdrawn { since, .. }) => PodState::Withdrawn { since, del_acked: true },
            (Del, false, PodState::Released { since, .. }) => PodState::Released { since, del_acked: true },
            (_, _, state) => state,
        };
        self
    }

    /// Records what `check` found; returns the drift if it is new (to be counted and logged), `None` when the
    /// check found nothing or the finding no longer applies (the pod moved on while it ran).
    pub fn found(&mut self, check: &Check, finding: Option<Drift>) -> Option<&Drift> {
        let finding = finding?;
        let applies = self.state.checked()
            && self.drift.is_none()
            && match finding {
                Drift::Listeners(_) => check.listeners.is_some() && self.state.ack() == check.listeners,
                Drift::Rules(_) | Drift::Netns => true,
            };
        if !applies {
            return None;
        }
        self.drift = Some(finding);
        self.drift.as_ref()
    }
}

/// The next step of every pod, in uid order: the pods the view holds and those the agent has a record for.
pub fn plan(
    observed: &BTreeMap<PodUid, Observed>,
    current: &BTreeMap<PodUid, PodRecord>,
    ctx: &Context,
) -> Vec<(PodUid, Action)> {
    let uids: BTreeSet<&PodUid> = observed.keys().chain(current.keys()).collect();
    uids.into_iter()
        .filter_map(|uid| Some((uid.clone(), step(observed.get(uid), current.get(uid), ctx)?)))
        .collect()
}

/// The next step of one pod, if one is due: `observed` is `None` when the view no longer holds the pod (deleted),
/// `record` when the agent has done nothing for it.
pub fn step(observed: Option<&Observed>, record: Option<&PodRecord>, ctx: &Context) -> Option<Action> {
    let action = match observed {
        Some(o) if o.enrolled => enroll(record, o.annotated, ctx),
        _ => leave(record, observed, ctx),
    }?;
    let waiting = record
        .and_then(|r| r.retry.as_ref())
        .is_some_and(|r| r.action == action && r.at > ctx.now);
    (!waiting).then_some(action)
}

/// The step towards an enrolled pod: repairs first, then the next state forward.
fn enroll(record: Option<&PodRecord>, annotated: bool, ctx: &Context) -> Option<Action> {
    let Some(record) = record else {
        return Some(Action::InstallCapture);
    };
    match (&record.state, &record.drift) {
        (PodState::Pending | PodState::Released { .. } | PodState::Left { .. }, _) | (_, Some(Drift::Netns)) => {
            Some(Action::InstallCapture)
        }
        (_, Some(Drift::Rules(_))) => Some(Action::RepairCapture),
        (PodState::Acked { .. } | PodState::Enrolled { .. }, Some(Drift::Listeners(_))) => Some(Action::Rehand),
        (PodState::Captured, _) => Some(Action::HandToProxy),
        (PodState::Handed, _) => None,
        (PodState::Withdrawn { since, del_acked }, _) => {
            let back = *del_acked || ctx.connected.is_empty() || ctx.now >= *since + REHAND_WAIT;
            back.then_some(Action::HandToProxy)
        }
        (PodState::Acked { .. }, _) => Some(Action::PatchEnabled),
        (PodState::Enrolled { patched_view, .. }, _) => {
            (!annotated && ctx.view > *patched_view).then_some(Action::PatchEnabled)
        }
        // Enrolled again while leaving: whether the proxy still serves it is unknown, so it is handed afresh.
        (PodState::Unpatched, _) => Some(Action::Rehand),
    }
}

/// The step towards a pod that is not enrolled (or is gone): the annotation first, then the proxy, then capture.
fn leave(record: Option<&PodRecord>, observed: Option<&Observed>, ctx: &Context) -> Option<Action> {
    // A deleted pod cannot be patched (nor needs to be).
    let annotated = observed.is_some_and(|o| o.annotated);
    let Some(record) = record else {
        if annotated {
            return Some(Action::Unpatch);
        }
        return observed.is_some_and(|o| o.leftover).then_some(Action::RemoveCapture);
    };
    let patched = observed.is_some() && matches!(record.state, PodState::Enrolled { .. });
    match &record.state {
        PodState::Left { view } => (annotated && ctx.view > *view).then_some(Action::Unpatch),
        PodState::Unpatched => Some(Action::RemoveFromProxy),
        PodState::Released { since, del_acked } => {
            let drained = *del_acked || ctx.connected.is_empty() || ctx.now >= *since + REHAND_WAIT;
            drained.then_some(Action::RemoveCapture)
        }
        _ if annotated || patched => Some(Action::Unpatch),
        PodState::Pending | PodState::Captured => Some(Action::RemoveCapture),
        PodState::Handed | PodState::Withdrawn { .. } | PodState::Acked { .. } | PodState::Enrolled { .. } => {
            Some(Action::RemoveFromProxy)
        }
    }
}

/// The checks due: every enrolling or enrolled pod with nothing left to repair; the listeners of those the proxy
/// acked on a connection still open, [`LISTENER_GRACE`] after the ack.
pub fn checks(
    observed: &BTreeMap<PodUid, Observed>,
    current: &BTreeMap<PodUid, PodRecord>,
    ctx: &Context,
) -> Vec<Check> {
    current
        .iter()
        .filter(|(uid, record)| {
            observed.get(*uid).is_some_and(|o| o.enrolled) && record.state.checked() && record.drift.is_none()
        })
        .map(|(uid, record)| Check {
            uid: uid.clone(),
            listeners: record
                .state
                .ack()
                .filter(|ack| ctx.connected.contains(&ack.conn) && ctx.now >= ack.at + LISTENER_GRACE),
        })
        .collect()
}

/// Forgets the pods that are gone from the view and that the agent has nothing left to undo for.
pub fn forget_gone(observed: &BTreeMap<PodUid, Observed>, current: &mut BTreeMap<PodUid, PodRecord>) {
    current.retain(|uid, record| observed.contains_key(uid) || !matches!(record.state, PodState::Left { .. }));
}

/// How many pods are fully enrolled.
pub fn enrolled_count(current: &BTreeMap<PodUid, PodRecord>) -> usize {
    current
        .values()
        .filter(|r| matches!(r.state, PodState::Enrolled { .. }))
        .count()
}

/// The earliest time after `now` when something becomes due without an outside event: a retry, or a withdrawn or
/// released pod's wait for the proxy running out.
pub fn next_due(current: &BTreeMap<PodUid, PodRecord>, now: Instant) -> Option<Instant> {
    current
        .values()
        .flat_map(|r| {
            let withdrawn = match r.state {
                PodState::Withdrawn { since, .. } | PodState::Released { since, .. } => Some(since + REHAND_WAIT),
                _ => None,
            };
            r.retry.as_ref().map(|retry| retry.at).into_iter().chain(withdrawn)
        })
        .filter(|at| *at > now)
        .min()
}

#[cfg(test)]
mod tests;
