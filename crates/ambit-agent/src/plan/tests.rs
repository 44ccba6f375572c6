use ambit_zds::RequestKind;

use super::*;

use Action::*;

const VIEW: u64 = 10;

/// (name, observed, record, expected step).
type StepCase = (&'static str, Option<Observed>, Option<PodRecord>, Option<Action>);
/// (name, record, check, finding, drift recorded).
type FindingCase = (&'static str, PodRecord, Check, Option<Drift>, Option<Drift>);

fn t0() -> Instant {
    // One instant for the whole test run, so offsets compare.
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(Instant::now)
}

fn at(ms: u64) -> Instant {
    t0() + Duration::from_millis(ms)
}

fn ack(ms: u64, conn: u64) -> Ack {
    Ack { at: at(ms), conn }
}

fn acked() -> PodState {
    PodState::Acked { ack: ack(0, 1) }
}

fn enrolled(patched_view: u64) -> PodState {
    PodState::Enrolled {
        ack: ack(0, 1),
        patched_view,
    }
}

fn withdrawn(del_acked: bool) -> PodState {
    PodState::Withdrawn {
        since: at(0),
        del_acked,
    }
}

fn released(del_acked: bool) -> PodState {
    PodState::Released {
        since: at(0),
        del_acked,
    }
}

fn record(state: PodState) -> PodRecord {
    PodRecord::new(state)
}

fn drifted(state: PodState, drift: Drift) -> PodRecord {
    PodRecord {
        drift: Some(drift),
        ..record(state)
    }
}

fn rules() -> Drift {
    Drift::Rules(vec!["table inet istio-ambient-nat is missing".into()])
}

fn listeners() -> Drift {
    Drift::Listeners(vec![15008])
}

const WANTED: Option<Observed> = Some(Observed {
    enrolled: true,
    annotated: false,
    leftover: false,
});
const WANTED_ANNOTATED: Option<Observed> = Some(Observed {
    enrolled: true,
    annotated: true,
    leftover: false,
});
const UNWANTED: Option<Observed> = Some(Observed {
    enrolled: false,
    annotated: false,
    leftover: false,
});
const UNWANTED_ANNOTATED: Option<Observed> = Some(Observed {
    enrolled: false,
    annotated: true,
    leftover: false,
});
const UNWANTED_LEFTOVER: Option<Observed> = Some(Observed {
    enrolled: false,
    annotated: false,
    leftover: true,
});
const GONE: Option<Observed> = None;

/// A context at `now_ms`, view [`VIEW`], with these connections open.
fn with<R>(now_ms: u64, connected: &[u64], f: impl FnOnce(&Context) -> R) -> R {
    let connected: BTreeSet<u64> = connected.iter().copied().collect();
    f(&Context {
        now: at(now_ms),
        view: VIEW,
        connected: &connected,
    })
}

#[test]
fn enrolling_walks_forward_one_step_at_a_time() {
    // (name, observed, record, expected step) at t = 0 with proxy connection 1 open.
    let cases: Vec<StepCase> = vec![
        ("new pod", WANTED, None, Some(InstallCapture)),
        (
            "install failed before",
            WANTED,
            Some(record(PodState::Pending)),
            Some(InstallCapture),
        ),
        ("captured", WANTED, Some(record(PodState::Captured)), Some(HandToProxy)),
        ("handed: wait for the ack", WANTED, Some(record(PodState::Handed)), None),
        ("acked", WANTED, Some(record(acked())), Some(PatchEnabled)),
        (
            "acked, annotated by someone",
            WANTED_ANNOTATED,
            Some(record(acked())),
            Some(PatchEnabled),
        ),
        ("enrolled", WANTED_ANNOTATED, Some(record(enrolled(VIEW))), None),
        (
            "enrolled, view older than the patch",
            WANTED,
            Some(record(enrolled(VIEW))),
            None,
        ),
        (
            "enrolled, annotation removed since",
            WANTED,
            Some(record(enrolled(VIEW - 1))),
            Some(PatchEnabled),
        ),
        ("withdrawn, Del not acked", WANTED, Some(record(withdrawn(false))), None),
        (
            "withdrawn, Del acked",
            WANTED,
            Some(record(withdrawn(true))),
            Some(HandToProxy),
        ),
        (
            "enrolled again while unpatched",
            WANTED,
            Some(record(PodState::Unpatched)),
            Some(Rehand),
        ),
        (
            "enrolled again once released",
            WANTED,
            Some(record(released(false))),
            Some(InstallCapture),
        ),
        (
            "enrolled again after leaving",
            WANTED,
            Some(record(PodState::Left { view: 3 })),
            Some(InstallCapture),
        ),
    ];
    for (name, observed, record, want) in cases {
        let got = with(0, &[1], |ctx| step(observed.as_ref(), record.as_ref(), ctx));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn drift_is_repaired_before_anything_else() {
    let cases: Vec<(&str, PodRecord, Option<Action>)> = vec![
        (
            "rules of an enrolled pod",
            drifted(enrolled(VIEW), rules()),
            Some(RepairCapture),
        ),
        (
            "rules of a handed pod",
            drifted(PodState::Handed, rules()),
            Some(RepairCapture),
        ),
        (
            "rules of a captured pod",
            drifted(PodState::Captured, rules()),
            Some(RepairCapture),
        ),
        (
            "listeners of an enrolled pod",
            drifted(enrolled(VIEW), listeners()),
            Some(Rehand),
        ),
        ("listeners of an acked pod", drifted(acked(), listeners()), Some(Rehand)),
        (
            "new namespace of an enrolled pod",
            drifted(enrolled(VIEW), Drift::Netns),
            Some(InstallCapture),
        ),
        (
            "new namespace of a handed pod",
            drifted(PodState::Handed, Drift::Netns),
            Some(InstallCapture),
        ),
    ];
    for (name, record, want) in cases {
        let got = with(0, &[1], |ctx| step(WANTED.as_ref(), Some(&record), ctx));
        assert_eq!(got, want, "{name}");
    }
    // A pod that is leaving is not repaired: it goes on leaving.
    let got = with(0, &[1], |ctx| {
        step(UNWANTED.as_ref(), Some(&drifted(enrolled(VIEW), rules())), ctx)
    });
    assert_eq!(got, Some(Unpatch));
}

#[test]
fn leaving_walks_back_annotation_then_proxy_then_capture() {
    let cases: Vec<StepCase> = vec![
        ("never enrolled", UNWANTED, None, None),
        (
            "unknown to the agent but annotated (agent restarted)",
            UNWANTED_ANNOTATED,
            None,
            Some(Unpatch),
        ),
        (
            "unknown to the agent, not annotated, capture left behind (agent died while releasing it)",
            UNWANTED_LEFTOVER,
            None,
            Some(RemoveCapture),
        ),
        (
            "enrolled: the view may not show our patch yet",
            UNWANTED,
            Some(record(enrolled(VIEW))),
            Some(Unpatch),
        ),
        (
            "enrolled and annotated",
            UNWANTED_ANNOTATED,
            Some(record(enrolled(VIEW))),
            Some(Unpatch),
        ),
        (
            "acked, not annotated",
            UNWANTED,
            Some(record(acked())),
            Some(RemoveFromProxy),
        ),
        (
            "acked, annotated",
            UNWANTED_ANNOTATED,
            Some(record(acked())),
            Some(Unpatch),
        ),
        (
            "handed",
            UNWANTED,
            Some(record(PodState::Handed)),
            Some(RemoveFromProxy),
        ),
        (
            "withdrawn",
            UNWANTED,
            Some(record(withdrawn(false))),
            Some(RemoveFromProxy),
        ),
        (
            "unpatched",
            UNWANTED_ANNOTATED,
            Some(record(PodState::Unpatched)),
            Some(RemoveFromProxy),
        ),
        (
            "released, proxy still draining",
            UNWANTED_ANNOTATED,
            Some(record(released(false))),
            None,
        ),
        (
            "released, proxy drained",
            UNWANTED_ANNOTATED,
            Some(record(released(true))),
            Some(RemoveCapture),
        ),
        (
            "captured",
            UNWANTED,
            Some(record(PodState::Captured)),
            Some(RemoveCapture),
        ),
        (
            "captured, stale annotation",
            UNWANTED_ANNOTATED,
            Some(record(PodState::Captured)),
            Some(Unpatch),
        ),
        (
            "pending: a partial install is undone",
            UNWANTED,
            Some(record(PodState::Pending)),
            Some(RemoveCapture),
        ),
        ("left", UNWANTED, Some(record(PodState::Left { view: VIEW })), None),
        (
            "left, the view predates the unpatch",
            UNWANTED_ANNOTATED,
            Some(record(PodState::Left { view: VIEW })),
            None,
        ),
        (
            "left, annotated again in a later view",
            UNWANTED_ANNOTATED,
            Some(record(PodState::Left { view: VIEW - 1 })),
            Some(Unpatch),
        ),
        // A deleted pod is not patched: it is gone from the control plane.
        (
            "deleted while enrolled",
            GONE,
            Some(record(enrolled(VIEW))),
            Some(RemoveFromProxy),
        ),
        (
            "deleted while unpatched",
            GONE,
            Some(record(PodState::Unpatched)),
            Some(RemoveFromProxy),
        ),
        (
            "deleted while captured",
            GONE,
            Some(record(PodState::Captured)),
            Some(RemoveCapture),
        ),
        (
            "deleted after leaving",
            GONE,
            Some(record(PodState::Left { view: 1 })),
            None,
        ),
        ("deleted, unknown", GONE, None, None),
    ];
    for (name, observed, record, want) in cases {
        let got = with(0, &[1], |ctx| step(observed.as_ref(), record.as_ref(), ctx));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn the_proxy_gets_its_del_acked_before_the_pod_comes_back_or_loses_capture() {
    let wait = REHAND_WAIT.as_millis() as u64;
    // (del acked, now, connections, due)
    let cases: &[(bool, u64, &[u64], bool)] = &[
        (false, 0, &[1], false),
        (false, wait - 1, &[1], false),
        (false, wait, &[1], true),
        (true, 0, &[1], true),
        (false, 0, &[], true),
    ];
    for (del_acked, now, connected, due) in cases {
        let withdrawn = record(withdrawn(*del_acked));
        let got = with(*now, connected, |ctx| step(WANTED.as_ref(), Some(&withdrawn), ctx));
        assert_eq!(
            got,
            due.then_some(HandToProxy),
            "withdrawn: del acked {del_acked}, now {now}, {connected:?}"
        );
        let released = record(released(*del_acked));
        let got = with(*now, connected, |ctx| step(UNWANTED.as_ref(), Some(&released), ctx));
        assert_eq!(
            got,
            due.then_some(RemoveCapture),
            "released: del acked {del_acked}, now {now}, {connected:?}"
        );
    }
}

#[test]
fn a_failed_action_waits_for_its_retry_but_not_other_actions() {
    let mut failed = with(0, &[1], |ctx| {
        PodRecord::failed(Some(record(acked())), PatchEnabled, ctx)
    });
    assert_eq!(failed.state, acked());
    let retry_at = RETRY_INITIAL.as_millis() as u64;
    // (observed, now, expected)
    let cases: &[(Option<Observed>, u64, Option<Action>)] = &[
        (WANTED, 0, None),
        (WANTED, retry_at - 1, None),
        (WANTED, retry_at, Some(PatchEnabled)),
        // Leaving is another action: it does not wait.
        (UNWANTED, 0, Some(RemoveFromProxy)),
    ];
    for (observed, now, want) in cases {
        let got = with(*now, &[1], |ctx| step(observed.as_ref(), Some(&failed), ctx));
        assert_eq!(got, *want, "{observed:?} at {now}");
    }
    // A first install that fails leaves a pending record.
    let pending = with(0, &[1], |ctx| PodRecord::failed(None, InstallCapture, ctx));
    assert_eq!(pending.state, PodState::Pending);
    assert_eq!(pending.retry.as_ref().map(|r| r.action), Some(InstallCapture));
    // Success forgets the retry.
    failed = with(retry_at, &[1], |ctx| PodRecord::done(Some(failed), PatchEnabled, ctx));
    assert_eq!(failed.retry, None);
}

#[test]
fn retry_delays_double_per_action_up_to_the_cap() {
    let mut retry: Option<Retry> = None;
    let mut delays = Vec::new();
    for _ in 0..10 {
        let next = Retry::after(retry.as_ref(), PatchEnabled, at(0));
        delays.push(next.at - at(0));
        retry = Some(next);
    }
    let ms = Duration::from_millis;
    let want = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000].map(ms);
    assert_eq!(delays, want);
    // Another action starts over.
    let other = Retry::after(retry.as_ref(), Unpatch, at(0));
    assert_eq!((other.attempts, other.at - at(0)), (1, RETRY_INITIAL));
}

#[test]
fn successful_actions_move_the_state() {
    // (name, state before (None: no record), action, state after)
    let cases: Vec<(&str, Option<PodState>, Action, PodState)> = vec![
        ("install", None, InstallCapture, PodState::Captured),
        (
            "install after pending",
            Some(PodState::Pending),
            InstallCapture,
            PodState::Captured,
        ),
        (
            "reinstall in a new namespace",
            Some(enrolled(3)),
            InstallCapture,
            PodState::Captured,
        ),
        ("hand", Some(PodState::Captured), HandToProxy, PodState::Handed),
        ("hand again", Some(withdrawn(true)), HandToProxy, PodState::Handed),
        ("patch", Some(acked()), PatchEnabled, enrolled(VIEW)),
        ("patch again", Some(enrolled(3)), PatchEnabled, enrolled(VIEW)),
        ("unpatch in the set", Some(enrolled(3)), Unpatch, PodState::Unpatched),
        ("unpatch an acked pod", Some(acked()), Unpatch, PodState::Unpatched),
        (
            "unpatch out of the set",
            Some(PodState::Captured),
            Unpatch,
            released_at(7, true),
        ),
        ("unpatch without a record", None, Unpatch, released_at(7, true)),
        (
            "remove from the proxy",
            Some(PodState::Unpatched),
            RemoveFromProxy,
            released_at(7, false),
        ),
        (
            "remove a withdrawn pod",
            Some(withdrawn(false)),
            RemoveFromProxy,
            released_at(7, true),
        ),
        (
            "remove capture",
            Some(released(true)),
            RemoveCapture,
            PodState::Left { view: VIEW },
        ),
        ("repair keeps the state", Some(enrolled(3)), RepairCapture, enrolled(3)),
        (
            "rehand",
            Some(enrolled(3)),
            Rehand,
            PodState::Withdrawn {
                since: at(7),
                del_acked: false,
            },
        ),
    ];
    for (name, before, action, after) in cases {
        let record = before.map(|s| drifted(s, rules()));
        let got = with(7, &[1], |ctx| PodRecord::done(record, action, ctx));
        assert_eq!(got, PodRecord::new(after), "{name}");
    }
}

#[test]
fn acks_move_handed_pods_and_withdraw_failed_ones() {
    // (name, state before, kind, error, view annotated, state after, retry of HandToProxy set)
    let cases: Vec<(&str, PodState, RequestKind, bool, bool, PodState, bool)> = vec![
        (
            "add acked",
            PodState::Handed,
            RequestKind::Add,
            false,
            false,
            PodState::Acked { ack: ack(5, 2) },
            false,
        ),
        (
            "add acked, already annotated (agent restart)",
            PodState::Handed,
            RequestKind::Add,
            false,
            true,
            PodState::Enrolled {
                ack: ack(5, 2),
                patched_view: VIEW,
            },
            false,
        ),
        (
            "re-acked by a new proxy",
            enrolled(3),
            RequestKind::Add,
            false,
            true,
            PodState::Enrolled {
                ack: ack(5, 2),
                patched_view: 3,
            },
            false,
        ),
        (
            "add failed",
            PodState::Handed,
            RequestKind::Add,
            true,
            false,
            withdrawn_at(5, false),
            true,
        ),
        (
            "add failed for a new proxy",
            enrolled(3),
            RequestKind::Add,
            true,
            true,
            withdrawn_at(5, false),
            true,
        ),
        (
            "del acked",
            withdrawn(false),
            RequestKind::Del,
            false,
            false,
            withdrawn(true),
            false,
        ),
        (
            "del acked for a leaving pod",
            released(false),
            RequestKind::Del,
            false,
            false,
            released(true),
            false,
        ),
        (
            "late add ack of a withdrawn pod",
            withdrawn(false),
            RequestKind::Add,
            false,
            false,
            withdrawn(false),
            false,
        ),
        (
            "add failed while leaving",
            PodState::Unpatched,
            RequestKind::Add,
            true,
            false,
            PodState::Unpatched,
            false,
        ),
    ];
    for (name, before, kind, error, annotated, after, retried) in cases {
        let got = with(5, &[1, 2], |ctx| record(before).acked(kind, error, 2, annotated, ctx));
        assert_eq!(got.state, after, "{name}");
        let retry = got.retry.as_ref().map(|r| (r.action, r.at));
        let want_retry = retried.then(|| (HandToProxy, at(5) + RETRY_INITIAL));
        assert_eq!(retry, want_retry, "{name}");
    }
}

fn released_at(ms: u64, del_acked: bool) -> PodState {
    PodState::Released {
        since: at(ms),
        del_acked,
    }
}

fn withdrawn_at(ms: u64, del_acked: bool) -> PodState {
    PodState::Withdrawn {
        since: at(ms),
        del_acked,
    }
}

#[test]
fn checks_cover_enrolled_pods_and_listeners_after_the_grace() {
    let grace = LISTENER_GRACE.as_millis() as u64;
    let uid = PodUid::new;
    let observed: BTreeMap<PodUid, Observed> = [
        ("a-enrolled", WANTED),
        ("b-acked-on-old-conn", WANTED),
        ("c-handed", WANTED),
        ("d-drifted", WANTED),
        ("e-leaving", UNWANTED),
        ("f-left", WANTED),
        ("g-fresh-ack", WANTED),
    ]
    .into_iter()
    .map(|(u, o)| (uid(u), o.unwrap()))
    .collect();
    let current: BTreeMap<PodUid, PodRecord> = [
        ("a-enrolled", record(enrolled(1))),
        ("b-acked-on-old-conn", record(PodState::Acked { ack: ack(0, 9) })),
        ("c-handed", record(PodState::Handed)),
        ("d-drifted", drifted(enrolled(1), rules())),
        ("e-leaving", record(PodState::Unpatched)),
        ("f-left", record(PodState::Left { view: 1 })),
        ("g-fresh-ack", record(PodState::Acked { ack: ack(grace, 1) })),
    ]
    .into_iter()
    .map(|(u, r)| (uid(u), r))
    .collect();
    let got = with(grace, &[1], |ctx| checks(&observed, &current, ctx));
    let want = vec![
        Check {
            uid: uid("a-enrolled"),
            listeners: Some(ack(0, 1)),
        },
        Check {
            uid: uid("b-acked-on-old-conn"),
            listeners: None,
        },
        Check {
            uid: uid("c-handed"),
            listeners: None,
        },
        Check {
            uid: uid("g-fresh-ack"),
            listeners: None,
        },
    ];
    assert_eq!(got, want);
}

#[test]
fn findings_apply_only_while_they_hold() {
    let check = |listeners| Check {
        uid: PodUid::new("p"),
        listeners,
    };
    // (name, record, check, finding, expected drift recorded)
    let cases: Vec<FindingCase> = vec![
        ("clean", record(enrolled(1)), check(Some(ack(0, 1))), None, None),
        ("rules", record(enrolled(1)), check(None), Some(rules()), Some(rules())),
        (
            "listeners",
            record(enrolled(1)),
            check(Some(ack(0, 1))),
            Some(listeners()),
            Some(listeners()),
        ),
        (
            "listeners of an older ack",
            record(enrolled(1)),
            check(Some(ack(0, 7))),
            Some(listeners()),
            None,
        ),
        (
            "netns",
            record(PodState::Handed),
            check(None),
            Some(Drift::Netns),
            Some(Drift::Netns),
        ),
        (
            "pod left meanwhile",
            record(released(false)),
            check(None),
            Some(rules()),
            None,
        ),
        (
            "already drifted",
            drifted(enrolled(1), Drift::Netns),
            check(None),
            Some(rules()),
            Some(Drift::Netns),
        ),
    ];
    for (name, mut record, check, finding, want) in cases {
        record.found(&check, finding);
        assert_eq!(record.drift, want, "{name}");
    }
}

#[test]
fn a_whole_enrollment_and_leave_runs_through_plan() {
    let uid = PodUid::new("p");
    let mut observed = BTreeMap::from([(uid.clone(), WANTED.unwrap())]);
    let mut current: BTreeMap<PodUid, PodRecord> = BTreeMap::new();
    let mut trace = Vec::new();
    // Runs plan until it is quiet, every action succeeding.
    let mut run = |observed: &BTreeMap<PodUid, Observed>, current: &mut BTreeMap<PodUid, PodRecord>| {
        for _ in 0..10 {
            let actions = with(0, &[1], |ctx| plan(observed, current, ctx));
            if actions.is_empty() {
                return;
            }
            for (uid, action) in actions {
                trace.push(action);
                let next = with(0, &[1], |ctx| PodRecord::done(current.remove(&uid), action, ctx));
                current.insert(uid, next);
            }
        }
        panic!("plan did not settle: {trace:?}");
    };
    run(&observed, &mut current);
    let acked_rec = with(0, &[1], |ctx| {
        current[&uid].clone().acked(RequestKind::Add, false, 1, false, ctx)
    });
    current.insert(uid.clone(), acked_rec);
    run(&observed, &mut current);
    assert_eq!(enrolled_count(&current), 1);
    observed.insert(uid.clone(), UNWANTED_ANNOTATED.unwrap());
    run(&observed, &mut current);
    // Capture stays until the proxy acked the Del.
    assert_eq!(current[&uid].state, released(false));
    let del_acked = with(0, &[1], |ctx| {
        current[&uid].clone().acked(RequestKind::Del, false, 1, false, ctx)
    });
    current.insert(uid.clone(), del_acked);
    run(&observed, &mut current);
    assert_eq!(
        trace,
        [
            InstallCapture,
            HandToProxy,
            PatchEnabled,
            Unpatch,
            RemoveFromProxy,
            RemoveCapture
        ]
    );
    assert_eq!(current[&uid].state, PodState::Left { view: VIEW });
    // Once the pod is gone from the view, its record is forgotten.
    forget_gone(&observed, &mut current);
    assert_eq!(current.len(), 1);
    observed.clear();
    forget_gone(&observed, &mut current);
    assert!(current.is_empty());
}

#[test]
fn next_due_is_the_earliest_future_retry_or_rehand() {
    let uid = PodUid::new;
    let mut current = BTreeMap::from([(uid("a"), record(withdrawn(false))), (uid("b"), record(enrolled(1)))]);
    assert_eq!(next_due(&current, at(1)), Some(at(0) + REHAND_WAIT));
    let retry = Retry {
        action: PatchEnabled,
        at: at(300),
        attempts: 1,
    };
    current.get_mut(&uid("b")).unwrap().retry = Some(retry);
    assert_eq!(next_due(&current, at(1)), Some(at(300)));
    // Times already past are not due again (the plan handles them now or never).
    assert_eq!(next_due(&current, at(400)), Some(at(0) + REHAND_WAIT));
    assert_eq!(next_due(&current, at(0) + REHAND_WAIT), None);
}
