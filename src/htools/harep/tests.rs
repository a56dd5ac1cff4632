use serde_json::json;

use super::*;

const NOW: i64 = 1_700_000_000;

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|t| (*t).to_owned()).collect()
}

fn pending(kind: &str, uuid: &str, ts: i64, jobs: &str) -> String {
    format!("ganeti:watcher:autorepair:pending:{kind}:{uuid}:{ts}:{jobs}")
}

fn result(kind: &str, uuid: &str, ts: i64, result: &str, jobs: &str) -> String {
    format!("ganeti:watcher:autorepair:result:{kind}:{uuid}:{ts}:{result}:{jobs}")
}

fn online() -> NodeView {
    NodeView {
        offline: false,
        drained: false,
        vm_capable: true,
    }
}

fn offline() -> NodeView {
    NodeView {
        offline: true,
        ..online()
    }
}

fn drbd(name: &str, primary: &str, secondary: &str) -> InstanceView {
    InstanceView {
        name: name.into(),
        disk_template: DiskTemplate::Drbd,
        primary: primary.into(),
        secondaries: vec![secondary.into()],
        group: "default".into(),
        tags: Vec::new(),
    }
}

fn plain(name: &str, primary: &str) -> InstanceView {
    InstanceView {
        disk_template: DiskTemplate::Plain,
        secondaries: Vec::new(),
        ..drbd(name, primary, "unused")
    }
}

fn nodes(list: &[(&str, NodeView)]) -> BTreeMap<String, NodeView> {
    list.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect()
}

fn state_of<T: AsRef<str>>(instance_tags: &[T]) -> InstanceRepair {
    InstanceRepair::from_tags("inst1", instance_tags.iter().map(AsRef::as_ref)).expect("valid tags")
}

fn uuids() -> impl FnMut() -> String {
    let mut next = 0;
    move || {
        next += 1;
        format!("uuid-{next}")
    }
}

fn statuses(list: &[(u64, JobStatus)]) -> BTreeMap<JobId, JobStatus> {
    list.iter().map(|(id, s)| (JobId(*id), *s)).collect()
}

fn failover_detected() -> DetectedRepair {
    let n = nodes(&[("n1", offline()), ("n2", online())]);
    detect_broken(&drbd("inst1", "n1", "n2"), &n)
        .unwrap()
        .expect("broken")
}

// ---------------------------------------------------------------- types and tags

#[test]
fn repair_types_order_from_least_to_most_destructive() {
    use RepairType::*;
    assert!(FixStorage < Migrate && Migrate < Failover && Failover < Reinstall);
    for kind in RepairType::ALL {
        assert_eq!(RepairType::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(FixStorage.to_string(), "fix-storage");
    assert_eq!(RepairType::parse("Failover"), None);
    assert_eq!(RepairType::parse(""), None);
}

#[test]
fn results_order_enoperm_success_failure_and_pending_sorts_first() {
    use RepairResult::*;
    assert!(Enoperm < Success && Success < Failure);
    assert!(None < Some(Enoperm));
    for r in RepairResult::ALL {
        assert_eq!(RepairResult::parse(r.as_str()), Some(r));
    }
}

#[test]
fn tags_are_formatted_exactly() {
    let pending = RepairRecord::new(
        RepairType::Failover,
        "u1".into(),
        NOW,
        vec![JobId(12), JobId(13)],
        None,
    );
    assert_eq!(
        pending.tag,
        "ganeti:watcher:autorepair:pending:failover:u1:1700000000:12+13"
    );
    let refused = RepairRecord::new(
        RepairType::Reinstall,
        "u2".into(),
        NOW,
        Vec::new(),
        Some(RepairResult::Enoperm),
    );
    assert_eq!(
        refused.tag,
        "ganeti:watcher:autorepair:result:reinstall:u2:1700000000:enoperm:"
    );
    let done = RepairRecord::new(
        RepairType::FixStorage,
        "u3".into(),
        5,
        vec![JobId(7)],
        Some(RepairResult::Success),
    );
    assert_eq!(
        done.tag,
        "ganeti:watcher:autorepair:result:fix-storage:u3:5:success:7"
    );
}

#[test]
fn tags_parse_back_to_their_records() {
    for record in [
        RepairRecord::new(RepairType::Migrate, "a".into(), 1, vec![JobId(1)], None),
        RepairRecord::new(
            RepairType::Reinstall,
            "b".into(),
            2,
            Vec::new(),
            Some(RepairResult::Enoperm),
        ),
        RepairRecord::new(
            RepairType::FixStorage,
            "c".into(),
            -3,
            vec![JobId(4), JobId(5), JobId(6)],
            Some(RepairResult::Failure),
        ),
    ] {
        assert_eq!(RepairRecord::parse_tag(&record.tag), Some(record));
    }
}

#[test]
fn malformed_or_foreign_tags_are_not_records() {
    for tag in [
        "ganeti:watcher:autorepair:failover",
        "ganeti:watcher:autorepair:pending",
        "ganeti:watcher:autorepair:pending:",
        "ganeti:watcher:autorepair:pending:failover:u:1",
        "ganeti:watcher:autorepair:pending:failover:u:1:2:3",
        "ganeti:watcher:autorepair:pending:repaint:u:1:2",
        "ganeti:watcher:autorepair:pending:failover:u:1.5:2",
        "ganeti:watcher:autorepair:pending:failover:u:1e3:2",
        "ganeti:watcher:autorepair:pending:failover:u:+1:2",
        "ganeti:watcher:autorepair:pending:failover:u::2",
        "ganeti:watcher:autorepair:pending:failover:u:1:-2",
        "ganeti:watcher:autorepair:pending:failover:u:1:2+",
        "ganeti:watcher:autorepair:pending:failover:u:1:2++3",
        "ganeti:watcher:autorepair:pending:failover:u:1:x",
        "ganeti:watcher:autorepair:pending:failover:u:0x:1",
        "ganeti:watcher:autorepair:result:failover:u:1:2",
        "ganeti:watcher:autorepair:result:failover:u:1:oops:2",
        "ganeti:watcher:autorepair:result:failover:u:1:success:2:3",
        "ganeti:watcher:autorepair:suspend",
        "htools:iextags:service",
        "",
    ] {
        assert_eq!(RepairRecord::parse_tag(tag), None, "{tag}");
    }
}

#[test]
fn numbers_are_read_like_haskell() {
    let parse = |tag: &str| RepairRecord::parse_tag(tag).expect(tag);
    let r = parse("ganeti:watcher:autorepair:pending:failover:u:-5:0x1F+0o10+007");
    assert_eq!(r.timestamp, -5);
    assert_eq!(r.jobs, vec![JobId(31), JobId(8), JobId(7)]);
    // The uuid may be empty; the tag is kept as found.
    let r = parse("ganeti:watcher:autorepair:result:migrate::0X10:success:");
    assert_eq!((r.uuid.as_str(), r.timestamp), ("", 16));
    assert!(r.jobs.is_empty());
    // Job ids are Haskell Ints: they wrap, and must not come out negative.
    let r = parse("ganeti:watcher:autorepair:pending:failover:u:1:18446744073709551617");
    assert_eq!(r.jobs, vec![JobId(1)]);
    assert_eq!(
        RepairRecord::parse_tag(
            "ganeti:watcher:autorepair:pending:failover:u:1:9223372036854775808"
        ),
        None
    );
    // Times are unbounded in Haskell; here they saturate.
    let r = parse("ganeti:watcher:autorepair:pending:failover:u:99999999999999999999999:1");
    assert_eq!(r.timestamp, i64::MAX);
    let r = parse("ganeti:watcher:autorepair:pending:failover:u:-99999999999999999999999:1");
    assert_eq!(r.timestamp, i64::MIN);
    let r = parse("ganeti:watcher:autorepair:pending:failover:u:-9223372036854775808:1");
    assert_eq!(r.timestamp, i64::MIN);
}

// ---------------------------------------------------------------- policy

#[test]
fn no_autorepair_tags_means_no_opinion() {
    assert_eq!(policy_from_tags(["a", "b:c"], NOW), None);
    assert_eq!(
        policy_from_tags(
            [
                "ganeti:watcher:autorepair",
                "ganeti:watcher:autorepair:",
                "ganeti:watcher:autorepair:Migrate",
                "ganeti:watcher:autorepair:pending:migrate:u:1:2",
                "ganeti:watcher:autorepair:suspend:garbage",
                "ganeti:watcher:autorepair:suspend:1.5",
            ],
            NOW
        ),
        None
    );
}

#[test]
fn the_least_destructive_enabled_type_wins() {
    let policy = policy_from_tags(
        [
            "ganeti:watcher:autorepair:reinstall",
            "ganeti:watcher:autorepair:migrate",
            "ganeti:watcher:autorepair:failover",
        ],
        NOW,
    );
    assert_eq!(policy, Some(RepairPolicy::Enabled(RepairType::Migrate)));
}

#[test]
fn suspend_without_time_is_forever_and_beats_everything() {
    for forever in [
        "ganeti:watcher:autorepair:suspend",
        "ganeti:watcher:autorepair:suspend:",
    ] {
        let until = format!("ganeti:watcher:autorepair:suspend:{}", NOW + 100);
        let policy = policy_from_tags(
            [
                "ganeti:watcher:autorepair:reinstall",
                until.as_str(),
                forever,
            ],
            NOW,
        );
        assert_eq!(
            policy,
            Some(RepairPolicy::Suspended(Suspension::Forever)),
            "{forever}"
        );
    }
}

#[test]
fn suspension_lasts_until_the_latest_future_time() {
    let later = format!("ganeti:watcher:autorepair:suspend:{}", NOW + 100);
    let soon = format!("ganeti:watcher:autorepair:suspend:{}", NOW + 1);
    let expired = format!("ganeti:watcher:autorepair:suspend:{}", NOW - 1);
    let policy = policy_from_tags(
        [
            soon.as_str(),
            later.as_str(),
            expired.as_str(),
            "ganeti:watcher:autorepair:failover",
        ],
        NOW,
    );
    assert_eq!(
        policy,
        Some(RepairPolicy::Suspended(Suspension::Until(NOW + 100)))
    );
}

#[test]
fn expired_suspension_is_ignored() {
    let at_now = format!("ganeti:watcher:autorepair:suspend:{NOW}");
    let policy = policy_from_tags([at_now.as_str(), "ganeti:watcher:autorepair:failover"], NOW);
    assert_eq!(policy, Some(RepairPolicy::Enabled(RepairType::Failover)));
    assert_eq!(policy_from_tags([at_now.as_str()], NOW), None);
}

#[test]
fn instance_beats_group_beats_cluster() {
    let enable = |kind: &str| vec![format!("ganeti:watcher:autorepair:{kind}")];
    let none: Vec<String> = Vec::new();
    let suspend = tags(&["ganeti:watcher:autorepair:suspend"]);
    let policy =
        |i: &[String], g: &[String], c: &[String]| effective_policy(strs(i), strs(g), strs(c), NOW);
    use RepairPolicy::*;
    use RepairType::*;
    assert_eq!(policy(&none, &none, &none), NotEnabled);
    assert_eq!(
        policy(&none, &none, &enable("reinstall")),
        Enabled(Reinstall)
    );
    assert_eq!(
        policy(&none, &enable("migrate"), &enable("reinstall")),
        Enabled(Migrate)
    );
    assert_eq!(
        policy(
            &enable("reinstall"),
            &enable("migrate"),
            &enable("fix-storage")
        ),
        Enabled(Reinstall)
    );
    // A suspension at a narrower scope stops what a wider one enables, and vice versa.
    assert_eq!(
        policy(&suspend, &none, &enable("reinstall")),
        Suspended(Suspension::Forever)
    );
    assert_eq!(
        policy(&none, &suspend, &enable("reinstall")),
        Suspended(Suspension::Forever)
    );
    assert_eq!(
        policy(&enable("failover"), &suspend, &suspend),
        Enabled(Failover)
    );
    // An expired suspension is no opinion: the wider scope decides.
    let expired = vec![format!("ganeti:watcher:autorepair:suspend:{}", NOW - 5)];
    assert_eq!(
        policy(&expired, &enable("migrate"), &none),
        Enabled(Migrate)
    );
}

// ---------------------------------------------------------------- initial state

#[test]
fn an_instance_without_records_is_healthy() {
    let s = state_of(&tags(&["foo", "ganeti:watcher:autorepair:reinstall"]));
    assert_eq!(s.state, RepairState::Healthy(None));
    assert!(s.tags_to_remove.is_empty());
    assert_eq!(s.state.name(), "Healthy");
}

#[test]
fn a_single_record_sets_the_state() {
    let cases = [
        (result("migrate", "u", 1, "success", "1"), "Healthy"),
        (result("migrate", "u", 1, "enoperm", ""), "Healthy"),
        (result("migrate", "u", 1, "failure", "1"), "Failure"),
        (pending("migrate", "u", 1, "1"), "Pending repair"),
    ];
    for (tag, name) in cases {
        let s = state_of(&[tag.as_str()]);
        assert_eq!(s.state.name(), name, "{tag}");
        assert_eq!(s.state.record().map(|r| r.tag.as_str()), Some(tag.as_str()));
        assert!(s.tags_to_remove.is_empty());
    }
}

#[test]
fn later_repairs_supersede_earlier_ones_most_recent_removed_first() {
    let s1 = result("migrate", "a", 10, "success", "1");
    let s2 = result("failover", "b", 20, "enoperm", "");
    let s3 = result("fix-storage", "c", 30, "success", "3");
    // Tag order does not matter, times do.
    let s = state_of(&[s3.clone(), s1.clone(), s2.clone()]);
    assert_eq!(s.state.record().unwrap().tag, s3);
    assert_eq!(s.tags_to_remove, vec![s2, s1]);
}

#[test]
fn the_earliest_failure_wins_and_keeps_later_tags() {
    let failed = result("migrate", "a", 10, "failure", "1");
    let later = result("migrate", "b", 20, "success", "2");
    let later_pending = pending("migrate", "c", 30, "3");
    let s = state_of(&[later.clone(), later_pending, failed.clone()]);
    assert_eq!(s.state.name(), "Failure");
    assert_eq!(s.state.record().unwrap().tag, failed);
    assert!(s.tags_to_remove.is_empty());
}

#[test]
fn a_failure_after_successes_removes_them() {
    let ok = result("migrate", "a", 10, "success", "1");
    let failed = result("migrate", "b", 20, "failure", "2");
    let s = state_of(&[failed.clone(), ok.clone()]);
    assert_eq!(
        s.state,
        RepairState::Failed(RepairRecord::parse_tag(&failed).unwrap())
    );
    assert_eq!(s.tags_to_remove, vec![ok]);
}

#[test]
fn a_record_after_a_pending_repair_is_an_error() {
    let open = pending("failover", "a", 10, "1");
    let newer = result("migrate", "b", 20, "success", "2");
    let err = InstanceRepair::from_tags("inst1", [open.as_str(), newer.as_str()]).unwrap_err();
    assert_eq!(
        err,
        HarepError::UnfinishedRepair {
            instance: "inst1".into(),
            found_tag: newer.clone(),
            pending_tag: open.clone(),
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "An unfinished repair was found in instance inst1: found tag \"{newer}\", \
             but older pending tag \"{open}\" exists."
        )
    );
    // Two pending repairs too.
    let other = pending("failover", "c", 30, "3");
    assert!(InstanceRepair::from_tags("inst1", [other.as_str(), open.as_str()]).is_err());
}

#[test]
fn a_pending_repair_after_finished_ones_is_the_state() {
    let ok = result("migrate", "a", 10, "success", "1");
    let open = pending("failover", "b", 20, "2");
    let s = state_of(&[open.clone(), ok.clone()]);
    assert_eq!(s.state.name(), "Pending repair");
    assert_eq!(s.pending_jobs(), &[JobId(2)]);
    assert_eq!(s.tags_to_remove, vec![ok]);
}

#[test]
fn records_of_one_repair_are_one_episode_represented_by_the_greatest_result() {
    // Pending and result of the same uuid: the result stands for the episode, and the
    // pending tag is not removed (harep only removes the representative's tag).
    let open = pending("failover", "a", 10, "1");
    let done = result("failover", "a", 40, "success", "1");
    let s = state_of(&[open.clone(), done.clone()]);
    assert_eq!(s.state.record().unwrap().tag, done);
    assert!(s.tags_to_remove.is_empty());
    // Failure beats success whatever the times.
    let failed = result("failover", "a", 5, "failure", "1");
    let s = state_of(&[done.clone(), failed.clone()]);
    assert_eq!(s.state.record().unwrap().tag, failed);
    // Equal result and time: the last in tag order.
    let twin_a = result("failover", "a", 40, "success", "1");
    let twin_b = result("failover", "a", 40, "success", "2");
    assert_eq!(
        state_of(&[twin_a.clone(), twin_b.clone()])
            .state
            .record()
            .unwrap()
            .tag,
        twin_b
    );
    assert_eq!(
        state_of(&[twin_b, twin_a.clone()])
            .state
            .record()
            .unwrap()
            .tag,
        twin_a
    );
}

#[test]
fn episodes_are_ordered_by_their_earliest_record_then_by_uuid() {
    // Episode "b" starts at 5 (its result is at 50), so it comes before "a" (at 20).
    let b_open = pending("failover", "b", 5, "1");
    let b_done = result("failover", "b", 50, "success", "1");
    let a_done = result("migrate", "a", 20, "success", "2");
    let s = state_of(&[a_done.clone(), b_done.clone(), b_open]);
    assert_eq!(s.state.record().unwrap().tag, a_done);
    assert_eq!(s.tags_to_remove, vec![b_done]);
    // Same earliest time: uuid order decides, "a" first.
    let a = result("migrate", "a", 7, "success", "1");
    let b = result("migrate", "b", 7, "success", "2");
    let s = state_of(&[b.clone(), a.clone()]);
    assert_eq!(s.state.record().unwrap().tag, b);
    assert_eq!(s.tags_to_remove, vec![a]);
}

// ---------------------------------------------------------------- pending repairs

#[test]
fn a_repair_with_unfinished_jobs_stays_pending() {
    for unfinished in [
        JobStatus::Queued,
        JobStatus::Waiting,
        JobStatus::Canceling,
        JobStatus::Running,
    ] {
        let mut s = state_of(&[pending("failover", "u", 10, "1+2")]);
        let before = s.clone();
        let st = statuses(&[(1, JobStatus::Success), (2, unfinished)]);
        assert_eq!(s.settle_pending(&st, NOW), Ok(None), "{unfinished}");
        assert_eq!(s, before);
    }
}

#[test]
fn a_repair_whose_jobs_all_succeeded_becomes_a_success() {
    let open = pending("failover", "u", 10, "1+2");
    let mut s = state_of(&[open.as_str()]);
    let st = statuses(&[(1, JobStatus::Success), (2, JobStatus::Success)]);
    let changes = s.settle_pending(&st, NOW).unwrap().expect("settled");
    let done = format!("ganeti:watcher:autorepair:result:failover:u:{NOW}:success:1+2");
    assert_eq!(
        changes,
        TagChanges {
            instance: "inst1".into(),
            add: Some(done.clone()),
            remove: vec![open],
        }
    );
    assert_eq!(s.state.name(), "Healthy");
    assert_eq!(s.state.record().unwrap().tag, done);
    assert!(s.tags_to_remove.is_empty());
}

#[test]
fn a_repair_with_a_failed_or_canceled_job_becomes_a_failure() {
    for bad in [JobStatus::Error, JobStatus::Canceled] {
        let open = pending("reinstall", "u", 10, "7");
        let mut s = state_of(&[open.as_str()]);
        let changes = s
            .settle_pending(&statuses(&[(7, bad)]), NOW)
            .unwrap()
            .expect("settled");
        let failed = format!("ganeti:watcher:autorepair:result:reinstall:u:{NOW}:failure:7");
        assert_eq!(changes.add.as_deref(), Some(failed.as_str()));
        assert_eq!(changes.remove, vec![open]);
        assert_eq!(s.state.name(), "Failure");
    }
}

#[test]
fn settling_also_removes_tags_superseded_when_parsing() {
    let ok = result("migrate", "a", 10, "success", "1");
    let open = pending("failover", "b", 20, "2");
    let mut s = state_of(&[ok.clone(), open.clone()]);
    let changes = s
        .settle_pending(&statuses(&[(2, JobStatus::Success)]), NOW)
        .unwrap()
        .unwrap();
    assert_eq!(changes.remove, vec![open, ok]);
}

#[test]
fn an_unknown_job_is_an_error() {
    let mut s = state_of(&[pending("failover", "u", 10, "1+2")]);
    let err = s
        .settle_pending(&statuses(&[(1, JobStatus::Success)]), NOW)
        .unwrap_err();
    assert_eq!(
        err,
        HarepError::UnknownJob {
            instance: "inst1".into(),
            job: JobId(2)
        }
    );
}

#[test]
fn a_repair_without_job_ids_is_judged_by_every_job() {
    let open = pending("failover", "u", 10, "");
    let mut s = state_of(&[open.as_str()]);
    let busy = statuses(&[(1, JobStatus::Success), (5, JobStatus::Running)]);
    assert_eq!(s.settle_pending(&busy, NOW), Ok(None));
    let mixed = statuses(&[(1, JobStatus::Success), (5, JobStatus::Error)]);
    let changes = s.settle_pending(&mixed, NOW).unwrap().unwrap();
    assert_eq!(
        changes.add.as_deref(),
        Some(format!("ganeti:watcher:autorepair:result:failover:u:{NOW}:failure:").as_str())
    );
    let mut s = state_of(&[open]);
    let changes = s.settle_pending(&BTreeMap::new(), NOW).unwrap().unwrap();
    assert!(changes.add.unwrap().contains(":success:"));
}

#[test]
fn settling_an_instance_that_is_not_pending_does_nothing() {
    let mut s = state_of(&[result("migrate", "a", 10, "success", "1")]);
    let before = s.clone();
    assert_eq!(s.settle_pending(&BTreeMap::new(), NOW), Ok(None));
    assert_eq!(s, before);
    assert!(s.pending_jobs().is_empty());
}

// ---------------------------------------------------------------- detection

#[test]
fn drbd_with_both_nodes_offline_is_reinstalled() {
    let n = nodes(&[("n1", offline()), ("n2", offline())]);
    let d = detect_broken(&drbd("inst1", "n1", "n2"), &n)
        .unwrap()
        .unwrap();
    assert_eq!(d.breakage, Breakage::PrimaryAndSecondaryOffline);
    assert_eq!(d.repair, RepairType::Reinstall);
    assert_eq!(d.touched_nodes, vec!["n1".to_owned(), "n2".to_owned()]);
    assert_eq!(
        serde_json::to_value(&d.opcodes).unwrap(),
        json!([
            {"OP_ID": "OP_INSTANCE_RECREATE_DISKS", "instance_name": "inst1", "disks": [],
             "nodes": [], "iallocator": "hail"},
            {"OP_ID": "OP_INSTANCE_REINSTALL", "instance_name": "inst1", "force_variant": false}
        ])
    );
}

#[test]
fn drbd_with_the_primary_offline_fails_over() {
    let d = failover_detected();
    assert_eq!(d.breakage, Breakage::PrimaryOffline);
    assert_eq!(d.repair, RepairType::Failover);
    assert_eq!(
        serde_json::to_value(&d.opcodes).unwrap(),
        json!([{"OP_ID": "OP_INSTANCE_FAILOVER", "instance_name": "inst1",
                "ignore_consistency": false, "shutdown_timeout": 120}])
    );
}

#[test]
fn drbd_with_the_secondary_offline_gets_new_storage() {
    let n = nodes(&[("n1", online()), ("n2", offline())]);
    let d = detect_broken(&drbd("inst1", "n1", "n2"), &n)
        .unwrap()
        .unwrap();
    assert_eq!(d.breakage, Breakage::SecondaryOffline);
    assert_eq!(d.repair, RepairType::FixStorage);
    assert_eq!(
        serde_json::to_value(&d.opcodes).unwrap(),
        json!([{"OP_ID": "OP_INSTANCE_REPLACE_DISKS", "instance_name": "inst1",
                "mode": "replace_new_secondary", "disks": [], "early_release": false,
                "iallocator": "hail"}])
    );
}

#[test]
fn plain_with_the_primary_offline_is_reinstalled() {
    let n = nodes(&[("n1", offline())]);
    let d = detect_broken(&plain("inst1", "n1"), &n).unwrap().unwrap();
    assert_eq!(d.breakage, Breakage::PrimaryOffline);
    assert_eq!(d.repair, RepairType::Reinstall);
    assert_eq!(d.opcodes[0].op_id(), "OP_INSTANCE_RECREATE_DISKS");
    assert_eq!(d.opcodes[1].op_id(), "OP_INSTANCE_REINSTALL");
    assert_eq!(d.touched_nodes, vec!["n1".to_owned()]);
}

#[test]
fn healthy_instances_and_other_templates_are_not_broken() {
    let up = nodes(&[("n1", online()), ("n2", online())]);
    assert_eq!(detect_broken(&drbd("i", "n1", "n2"), &up), Ok(None));
    assert_eq!(detect_broken(&plain("i", "n1"), &up), Ok(None));
    let down = nodes(&[("n1", offline()), ("n2", offline())]);
    for template in [
        DiskTemplate::Diskless,
        DiskTemplate::File,
        DiskTemplate::SharedFile,
        DiskTemplate::Blockdev,
        DiskTemplate::Rbd,
        DiskTemplate::Ext,
        DiskTemplate::Gluster,
    ] {
        let instance = InstanceView {
            disk_template: template,
            ..drbd("i", "n1", "n2")
        };
        assert_eq!(detect_broken(&instance, &down), Ok(None), "{template:?}");
    }
}

#[test]
fn drained_and_not_vm_capable_nodes_count_as_offline() {
    let drained = NodeView {
        drained: true,
        ..online()
    };
    let not_vm_capable = NodeView {
        vm_capable: false,
        ..online()
    };
    assert!(!online().is_htools_offline());
    for broken in [offline(), drained, not_vm_capable] {
        assert!(broken.is_htools_offline());
        let n = nodes(&[("n1", broken), ("n2", online())]);
        let d = detect_broken(&drbd("i", "n1", "n2"), &n).unwrap().unwrap();
        assert_eq!(d.repair, RepairType::Failover);
    }
}

#[test]
fn unknown_nodes_and_missing_secondaries_are_errors() {
    let n = nodes(&[("n1", online())]);
    assert_eq!(
        detect_broken(&drbd("i", "n1", "gone"), &n),
        Err(HarepError::UnknownNode {
            instance: "i".into(),
            node: "gone".into()
        })
    );
    assert!(matches!(
        detect_broken(&plain("i", "gone"), &n),
        Err(HarepError::UnknownNode { .. })
    ));
    let lonely = InstanceView {
        secondaries: Vec::new(),
        ..drbd("i", "n1", "x")
    };
    assert_eq!(
        detect_broken(&lonely, &n),
        Err(HarepError::MissingSecondary {
            instance: "i".into()
        })
    );
}

// ---------------------------------------------------------------- repair decisions

#[test]
fn repairs_up_to_the_allowed_type_are_submitted_others_refused() {
    let n = nodes(&[("up", online()), ("down", offline()), ("down2", offline())]);
    let detected = [
        detect_broken(&drbd("inst1", "up", "down"), &n), // fix-storage
        detect_broken(&drbd("inst1", "down", "up"), &n), // failover
        detect_broken(&drbd("inst1", "down", "down2"), &n), // reinstall
    ]
    .map(|d| d.unwrap().unwrap());
    for allowed in RepairType::ALL {
        for d in &detected {
            let mut s = state_of::<&str>(&[]);
            let decision = s.decide(RepairPolicy::Enabled(allowed), d, NOW, 10.0, uuids());
            let refused = d.repair > allowed;
            assert_eq!(
                matches!(decision, RepairDecision::Refused(_)),
                refused,
                "allowed {allowed}, detected {}",
                d.repair
            );
            assert_eq!(
                matches!(decision, RepairDecision::Submit(_)),
                !refused,
                "allowed {allowed}, detected {}",
                d.repair
            );
        }
    }
}

#[test]
fn a_refused_repair_is_tagged_enoperm_and_replaces_the_previous_record() {
    let old = result("fix-storage", "old", 10, "success", "4");
    let mut s = state_of(&[old.as_str()]);
    let decision = s.decide(
        RepairPolicy::Enabled(RepairType::Migrate),
        &failover_detected(),
        NOW,
        10.0,
        || "u-new".to_owned(),
    );
    let refused = format!("ganeti:watcher:autorepair:result:failover:u-new:{NOW}:enoperm:");
    assert_eq!(
        decision,
        RepairDecision::Refused(TagChanges {
            instance: "inst1".into(),
            add: Some(refused.clone()),
            remove: vec![old],
        })
    );
    assert_eq!(s.state.name(), "Needs repair");
    assert_eq!(s.state.record().unwrap().tag, refused);
}

#[test]
fn an_allowed_repair_is_one_job_starting_with_a_delay() {
    let mut s = state_of::<&str>(&[]);
    let decision = s.decide(
        RepairPolicy::Enabled(RepairType::Failover),
        &failover_detected(),
        NOW,
        DEFAULT_JOB_DELAY_SECONDS,
        || "u1".to_owned(),
    );
    let RepairDecision::Submit(job) = decision else {
        panic!("expected a submission, got {decision:?}");
    };
    assert_eq!(
        (job.instance.as_str(), job.repair, job.uuid.as_str()),
        ("inst1", RepairType::Failover, "u1")
    );
    assert_eq!(job.timestamp, NOW);
    assert_eq!(job.touched_nodes, vec!["n1".to_owned(), "n2".to_owned()]);
    assert_eq!(
        serde_json::to_value(&job.opcodes).unwrap(),
        json!([
            {"OP_ID": "OP_TEST_DELAY", "duration": 10.0, "on_master": true},
            {"OP_ID": "OP_INSTANCE_FAILOVER", "instance_name": "inst1",
             "ignore_consistency": false, "shutdown_timeout": 120}
        ])
    );
    // Deciding does not change the state: the job is not submitted yet.
    assert_eq!(s.state, RepairState::Healthy(None));
    let annotated = job.job(42);
    assert_eq!(annotated.len(), 2);
    assert!(annotated.iter().all(|op| op.reason
        == vec![crate::model::opcode::ReasonEntry(
            "gnt:daemon:maintd".into(),
            REPAIR_REASON.into(),
            42
        )]));
}

#[test]
fn no_delay_opcode_without_a_positive_delay() {
    for delay in [0.0, -1.0] {
        let mut s = state_of::<&str>(&[]);
        let decision = s.decide(
            RepairPolicy::Enabled(RepairType::Reinstall),
            &failover_detected(),
            NOW,
            delay,
            uuids(),
        );
        let RepairDecision::Submit(job) = decision else {
            panic!("expected a submission");
        };
        assert_eq!(job.opcodes.len(), 1);
        assert_eq!(job.opcodes[0].op_id(), "OP_INSTANCE_FAILOVER");
    }
}

#[test]
fn a_submitted_repair_is_tagged_pending_with_its_job_ids() {
    let old = result("failover", "old", 10, "enoperm", "");
    let mut s = state_of(&[old.as_str()]);
    let RepairDecision::Submit(job) = s.decide(
        RepairPolicy::Enabled(RepairType::Reinstall),
        &failover_detected(),
        NOW,
        10.0,
        || "u1".to_owned(),
    ) else {
        panic!("expected a submission");
    };
    let changes = s.record_submission(&job, vec![JobId(101), JobId(102)]);
    let open = format!("ganeti:watcher:autorepair:pending:failover:u1:{NOW}:101+102");
    assert_eq!(
        changes,
        TagChanges {
            instance: "inst1".into(),
            add: Some(open.clone()),
            remove: vec![old],
        }
    );
    assert_eq!(s.state.name(), "Pending repair");
    assert_eq!(s.pending_jobs(), &[JobId(101), JobId(102)]);
}

#[test]
fn only_healthy_instances_with_an_enabled_policy_are_repaired() {
    let detected = failover_detected();
    let mut called = false;
    for tag in [
        pending("failover", "u", 1, "1"),
        result("failover", "u", 1, "failure", "1"),
    ] {
        let mut s = state_of(&[tag]);
        let decision = s.decide(
            RepairPolicy::Enabled(RepairType::Reinstall),
            &detected,
            NOW,
            10.0,
            || {
                called = true;
                String::new()
            },
        );
        assert_eq!(decision, RepairDecision::NotHealthy);
    }
    for policy in [
        RepairPolicy::NotEnabled,
        RepairPolicy::Suspended(Suspension::Forever),
        RepairPolicy::Suspended(Suspension::Until(NOW + 1)),
    ] {
        let mut s = state_of::<&str>(&[]);
        let decision = s.decide(policy, &detected, NOW, 10.0, || {
            called = true;
            String::new()
        });
        assert_eq!(decision, RepairDecision::NotAllowed(policy));
        assert_eq!(s.state, RepairState::Healthy(None));
    }
    assert!(!called, "no uuid is drawn when nothing is recorded");
}

// ---------------------------------------------------------------- tag changes

#[test]
fn tag_changes_are_a_set_job_then_a_delete_job() {
    let changes = TagChanges {
        instance: "inst1".into(),
        add: Some("new".into()),
        remove: vec!["old2".into(), "old1".into()],
    };
    assert_eq!(
        serde_json::to_value(changes.opcodes()).unwrap(),
        json!([
            {"OP_ID": "OP_TAGS_SET", "kind": "instance", "name": "inst1", "tags": ["new"]},
            {"OP_ID": "OP_TAGS_DEL", "kind": "instance", "name": "inst1",
             "tags": ["old2", "old1"]}
        ])
    );
    let jobs = changes.jobs(7);
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0][0].reason[0].1, TAG_ADD_REASON);
    assert_eq!(jobs[1][0].reason[0].1, TAG_REMOVE_REASON);
    assert_eq!(jobs[1][0].reason[0].2, 7);

    let only_add = TagChanges {
        remove: Vec::new(),
        ..changes.clone()
    };
    assert_eq!(only_add.opcodes().len(), 1);
    let only_remove = TagChanges {
        add: None,
        ..changes
    };
    assert_eq!(only_remove.opcodes()[0].op_id(), "OP_TAGS_DEL");
    let nothing = TagChanges {
        instance: "i".into(),
        add: None,
        remove: Vec::new(),
    };
    assert!(nothing.is_empty());
    assert!(nothing.opcodes().is_empty());
}

// ---------------------------------------------------------------- rounds

/// A small cluster: n1 and n2 up, n3 offline, n4 drained.
fn cluster(instances: Vec<InstanceView>) -> HarepCluster {
    HarepCluster {
        cluster_tags: tags(&["ganeti:watcher:autorepair:reinstall"]),
        group_tags: BTreeMap::from([(
            "limited".to_owned(),
            tags(&["ganeti:watcher:autorepair:fix-storage"]),
        )]),
        nodes: nodes(&[
            ("n1", online()),
            ("n2", online()),
            ("n3", offline()),
            (
                "n4",
                NodeView {
                    drained: true,
                    ..online()
                },
            ),
        ]),
        instances,
    }
}

/// Apply tag changes the way Ganeti would.
fn apply(cluster: &mut HarepCluster, changes: &TagChanges) {
    let instance = cluster
        .instances
        .iter_mut()
        .find(|i| i.name == changes.instance)
        .expect("instance");
    if let Some(tag) = &changes.add {
        if !instance.tags.contains(tag) {
            instance.tags.push(tag.clone());
        }
    }
    instance.tags.retain(|t| !changes.remove.contains(t));
}

#[test]
fn a_round_follows_harep_step_by_step() {
    let done_but_still_broken = InstanceView {
        tags: vec![pending("fix-storage", "p", 100, "5")],
        ..drbd("a-settled", "n1", "n3")
    };
    let refused = InstanceView {
        group: "limited".into(),
        ..drbd("b-refused", "n3", "n1")
    };
    let suspended = InstanceView {
        tags: tags(&["ganeti:watcher:autorepair:suspend"]),
        ..drbd("c-suspended", "n3", "n4")
    };
    let fine = drbd("d-fine", "n1", "n2");
    let failed = InstanceView {
        tags: vec![result("failover", "f", 50, "failure", "3")],
        ..drbd("e-failed", "n4", "n1")
    };
    let lost_plain = plain("f-plain", "n4");
    let still_running = InstanceView {
        tags: vec![pending("failover", "r", 100, "6+7")],
        ..drbd("g-running", "n3", "n1")
    };
    let cluster = cluster(vec![
        done_but_still_broken,
        refused,
        suspended,
        fine,
        failed,
        lost_plain,
        still_running,
    ]);

    let mut round = HarepRound::start(&cluster, NOW).unwrap();
    assert_eq!(round.jobs_to_query(), vec![JobId(5), JobId(6), JobId(7)]);
    let policies: Vec<_> = round.instances().iter().map(|i| i.policy).collect();
    assert_eq!(policies[1], RepairPolicy::Enabled(RepairType::FixStorage));
    assert_eq!(policies[2], RepairPolicy::Suspended(Suspension::Forever));
    assert_eq!(policies[0], RepairPolicy::Enabled(RepairType::Reinstall));

    let st = statuses(&[
        (5, JobStatus::Success),
        (6, JobStatus::Success),
        (7, JobStatus::Running),
    ]);
    let settled = round.settle_pending(&st, NOW);
    let settled_tag = format!("ganeti:watcher:autorepair:result:fix-storage:p:{NOW}:success:5");
    assert_eq!(
        settled,
        vec![Ok(TagChanges {
            instance: "a-settled".into(),
            add: Some(settled_tag.clone()),
            remove: vec![pending("fix-storage", "p", 100, "5")],
        })]
    );

    let actions = round.plan_repairs(NOW, DEFAULT_JOB_DELAY_SECONDS, uuids());
    assert_eq!(actions.len(), 3, "{actions:#?}");
    // a: healthy again by its tags but still broken: repaired again, the success replaced.
    let RepairAction::Submit(job_a) = &actions[0] else {
        panic!("a: {:?}", actions[0]);
    };
    assert_eq!(
        (job_a.instance.as_str(), job_a.repair, job_a.uuid.as_str()),
        ("a-settled", RepairType::FixStorage, "uuid-1")
    );
    // b: failover needed, only fix-storage allowed by its group.
    assert_eq!(
        actions[1],
        RepairAction::Refuse(TagChanges {
            instance: "b-refused".into(),
            add: Some(format!(
                "ganeti:watcher:autorepair:result:failover:uuid-2:{NOW}:enoperm:"
            )),
            remove: Vec::new(),
        })
    );
    // f: plain on a drained node.
    let RepairAction::Submit(job_f) = &actions[2] else {
        panic!("f: {:?}", actions[2]);
    };
    assert_eq!(
        (job_f.instance.as_str(), job_f.repair),
        ("f-plain", RepairType::Reinstall)
    );

    let pending_a = round.record_submission(job_a, vec![JobId(20)]).unwrap();
    assert_eq!(
        pending_a,
        TagChanges {
            instance: "a-settled".into(),
            add: Some(format!(
                "ganeti:watcher:autorepair:pending:fix-storage:uuid-1:{NOW}:20"
            )),
            remove: vec![settled_tag],
        }
    );
    round.record_submission(job_f, vec![JobId(21)]).unwrap();
    let unknown = RepairJob {
        instance: "nope".into(),
        ..job_f.clone()
    };
    assert!(matches!(
        round.record_submission(&unknown, vec![JobId(1)]),
        Err(HarepError::UnknownInstance { .. })
    ));

    let counts = round.state_counts();
    assert_eq!(
        counts,
        BTreeMap::from([
            ("Pending repair", 3),
            ("Needs repair", 1),
            ("Healthy", 2),
            ("Failure", 1),
        ])
    );
}

#[test]
fn a_round_stops_on_an_unfinished_repair_or_an_unknown_node() {
    let mut broken_tags = drbd("i", "n1", "n2");
    broken_tags.tags = vec![
        pending("failover", "a", 1, "1"),
        pending("failover", "b", 2, "2"),
    ];
    assert!(matches!(
        HarepRound::start(&cluster(vec![broken_tags]), NOW),
        Err(HarepError::UnfinishedRepair { .. })
    ));
    assert!(matches!(
        HarepRound::start(&cluster(vec![drbd("i", "n1", "gone")]), NOW),
        Err(HarepError::UnknownNode { .. })
    ));
}

#[test]
fn settling_reports_each_instance_in_order_errors_included() {
    let a = InstanceView {
        tags: vec![pending("failover", "a", 1, "1")],
        ..drbd("a", "n1", "n2")
    };
    let b = InstanceView {
        tags: vec![pending("failover", "b", 1, "99")],
        ..drbd("b", "n1", "n2")
    };
    let c = InstanceView {
        tags: vec![pending("failover", "c", 1, "3")],
        ..drbd("c", "n1", "n2")
    };
    let mut round = HarepRound::start(&cluster(vec![a, b, c]), NOW).unwrap();
    let st = statuses(&[(1, JobStatus::Error), (3, JobStatus::Success)]);
    let settled = round.settle_pending(&st, NOW);
    assert_eq!(settled.len(), 3);
    assert_eq!(settled[0].as_ref().unwrap().instance, "a");
    assert_eq!(
        settled[1],
        Err(HarepError::UnknownJob {
            instance: "b".into(),
            job: JobId(99)
        })
    );
    assert_eq!(settled[2].as_ref().unwrap().instance, "c");
}

#[test]
fn a_group_without_tags_defers_to_the_cluster() {
    let mut c = cluster(vec![InstanceView {
        group: "unlisted".into(),
        ..drbd("i", "n3", "n1")
    }]);
    let round = HarepRound::start(&c, NOW).unwrap();
    assert_eq!(
        round.instances()[0].policy,
        RepairPolicy::Enabled(RepairType::Reinstall)
    );
    c.cluster_tags.clear();
    let mut round = HarepRound::start(&c, NOW).unwrap();
    assert_eq!(round.instances()[0].policy, RepairPolicy::NotEnabled);
    assert!(round.plan_repairs(NOW, 10.0, uuids()).is_empty());
}

#[test]
fn a_repair_lifecycle_over_several_rounds() {
    let mut c = cluster(vec![drbd("inst1", "n3", "n1")]);
    let tags_of = |c: &HarepCluster| c.instances[0].tags.clone();

    // Round 1: primary offline, failover allowed by the cluster: submit and tag pending.
    let mut round = HarepRound::start(&c, NOW).unwrap();
    assert!(round.settle_pending(&BTreeMap::new(), NOW).is_empty());
    let actions = round.plan_repairs(NOW, 10.0, || "r1".to_owned());
    let [RepairAction::Submit(job)] = actions.as_slice() else {
        panic!("{actions:?}");
    };
    let changes = round.record_submission(job, vec![JobId(40)]).unwrap();
    apply(&mut c, &changes);
    let open = format!("ganeti:watcher:autorepair:pending:failover:r1:{NOW}:40");
    assert_eq!(tags_of(&c), vec![open.clone()]);

    // Round 2: the job runs; nothing changes, nothing new is submitted.
    let mut round = HarepRound::start(&c, NOW + 60).unwrap();
    let st = statuses(&[(40, JobStatus::Running)]);
    assert!(round.settle_pending(&st, NOW + 60).is_empty());
    assert!(round.plan_repairs(NOW + 60, 10.0, uuids()).is_empty());

    // Round 3: the job succeeded and the instance now runs on n1 with a new secondary.
    c.instances[0].primary = "n1".into();
    c.instances[0].secondaries = vec!["n2".into()];
    let mut round = HarepRound::start(&c, NOW + 120).unwrap();
    let st = statuses(&[(40, JobStatus::Success)]);
    for changes in round.settle_pending(&st, NOW + 120) {
        apply(&mut c, &changes.unwrap());
    }
    assert!(round.plan_repairs(NOW + 120, 10.0, uuids()).is_empty());
    let done = format!(
        "ganeti:watcher:autorepair:result:failover:r1:{}:success:40",
        NOW + 120
    );
    assert_eq!(tags_of(&c), vec![done.clone()]);

    // Round 4: the new primary is lost too, but the operator suspended repairs.
    c.instances[0].primary = "n3".into();
    c.instances[0]
        .tags
        .push(format!("ganeti:watcher:autorepair:suspend:{}", NOW + 1000));
    let mut round = HarepRound::start(&c, NOW + 180).unwrap();
    assert!(round.plan_repairs(NOW + 180, 10.0, uuids()).is_empty());

    // Round 5: the suspension expired, but only fix-storage is allowed now: refused,
    // and refused again (with a new uuid) every round after.
    c.instances[0]
        .tags
        .push("ganeti:watcher:autorepair:fix-storage".into());
    let mut previous = done;
    for (n, at) in [(1, NOW + 2000), (2, NOW + 2060)] {
        let mut round = HarepRound::start(&c, at).unwrap();
        let actions = round.plan_repairs(at, 10.0, || format!("e{n}"));
        let [RepairAction::Refuse(changes)] = actions.as_slice() else {
            panic!("{actions:?}");
        };
        let refused = format!("ganeti:watcher:autorepair:result:failover:e{n}:{at}:enoperm:");
        assert_eq!(changes.add.as_deref(), Some(refused.as_str()));
        assert_eq!(changes.remove, vec![previous.clone()]);
        apply(&mut c, changes);
        previous = refused;
    }
    assert_eq!(
        tags_of(&c),
        vec![
            format!("ganeti:watcher:autorepair:suspend:{}", NOW + 1000),
            "ganeti:watcher:autorepair:fix-storage".to_owned(),
            previous,
        ]
    );
}
