//! Experiment files as `qlab run` reads them: the common sections' parsing, sweeps and
//! errors (`config.rs`) and each kind's own sections and checks (the kinds' modules),
//! through the built-in registry. Every error names file, line and column.

use qlab_core::reads::ReadMode;
use qlab_lab::LabError;
use qlab_lab::config::*;
use qlab_lab::kind::ExperimentKind;
use qlab_lab::reads::FaultProfile;
use qlab_lab::registry::Registry;
use qlab_lab::{attack, availability, counterexample, disruption, reads};
use std::path::Path;

const GOOD: &str = r#"
[experiment]
name = "t"
kind = "election"
trials = 3

[cluster]
protocol = "raft"
nodes = [3, 5]

[raft]
election_timeout_ms = [[150, 150], [150, 300]]

[faults]
crash = { who = "leader", at = "random-in-heartbeat" }
"#;

/// A file parsed and validated as `qlab run` does, by the built-in registry.
struct Parsed {
    experiment: Experiment,
    kind: &'static dyn ExperimentKind,
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} experiment {}", self.kind.name(), self.experiment.name())
    }
}

impl std::ops::Deref for Parsed {
    type Target = Experiment;
    fn deref(&self) -> &Experiment {
        &self.experiment
    }
}

impl Parsed {
    fn points(&self) -> Vec<Point> {
        self.kind.points(&self.experiment)
    }
    fn total_trials(&self) -> u64 {
        self.points().len() as u64 * self.experiment.trials()
    }
}

fn parse(text: &str) -> Result<Parsed, LabError> {
    let (experiment, kind) = Registry::builtin().parse(Path::new("exp.toml"), text.to_string())?;
    Ok(Parsed { experiment, kind })
}

#[test]
fn lists_expand_to_the_cartesian_product() {
    let e = parse(GOOD).unwrap();
    let points = e.points();
    assert_eq!(points.len(), 4);
    assert_eq!(points[1].nodes, 3);
    assert_eq!(points[1].election_timeout_ms_max, 300.0);
    assert_eq!(points[1].heartbeat_ms, 75.0);
    assert_eq!(e.total_trials(), 12);
}

#[test]
fn one_pair_is_one_range_not_two_values() {
    let e = parse(&GOOD.replace("[[150, 150], [150, 300]]", "[150, 155]")).unwrap();
    assert_eq!(e.points().len(), 2);
    assert_eq!(e.points()[0].election_timeout_ms_max, 155.0);
}

fn error_of(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn unknown_field_names_line_column_and_allowed_fields() {
    let e = error_of(&GOOD.replace("trials = 3", "trials = 3\ntrails = 4"));
    assert!(e.starts_with("exp.toml:6:1:"), "{e}");
    assert!(e.contains("unknown field `trails`") && e.contains("`trials`"), "{e}");
}

#[test]
fn unknown_protocol_lists_the_protocols() {
    let e = error_of(&GOOD.replace("protocol = \"raft\"", "protocol = \"zab\""));
    assert!(e.starts_with("exp.toml:8:12:"), "{e}");
    assert!(e.contains("zab") && e.contains("raft") && e.contains("multipaxos"), "{e}");
}

#[test]
fn both_crash_fault_protocols_size_by_f_and_sweep_together() {
    let text = GOOD
        .replace("protocol = \"raft\"", "protocol = [\"raft\", \"multipaxos\"]")
        .replace("nodes = [3, 5]", "f = [1, 2]");
    let experiment = parse(&text).unwrap();
    let sizes: Vec<(&str, u32)> = experiment.points().iter().map(|p| (p.protocol.name(), p.nodes)).collect();
    for expected in [("raft", 3), ("raft", 5), ("multipaxos", 3), ("multipaxos", 5)] {
        assert!(sizes.contains(&expected), "{sizes:?}");
    }
    let e = error_of(&text.replace("[faults]", "[paxos]\nwindow_slots = 0\n\n[faults]"));
    assert!(e.contains("window_slots"), "{e}");
    // In a file that does not run Multi-Paxos, [paxos] would be ignored: refused.
    let e = error_of(&GOOD.replace("[faults]", "[paxos]\nwindow_slots = 64\n\n[faults]"));
    assert!(e.contains("[paxos] configures a protocol this file does not run"), "{e}");
}

/// The baseline tolerates no fault: `f` > 0 names where and why.
#[test]
fn the_baseline_refuses_f_above_zero() {
    let text = GOOD
        .replace("kind = \"election\"", "kind = \"throughput\"")
        .replace("protocol = \"raft\"", "protocol = \"unreplicated\"")
        .replace("nodes = [3, 5]", "f = [0, 1]");
    let text = text[..text.find("[faults]").expect("GOOD has [faults]")].to_string();
    let e = error_of(&text);
    assert!(e.contains("unreplicated tolerates no fault: f = 0 (one node), got f = 1"), "{e}");
    assert!(e.starts_with("exp.toml:"), "{e}");
}

#[test]
fn unknown_kind_lists_the_kinds() {
    let text = GOOD.replace("kind = \"election\"", "kind = \"elections\"");
    let kinds: &[&str] = &["election", "throughput"];
    let e = Experiment::parse_with_kinds(Path::new("exp.toml"), text, Some(kinds)).unwrap_err().to_string();
    assert!(e.starts_with("exp.toml:4:8:"), "{e}");
    assert!(e.contains("unknown experiment kind `elections`, expected one of `election`, `throughput`"), "{e}");
}

#[test]
fn inverted_or_negative_timeout_range_is_refused() {
    let e = error_of(&GOOD.replace("[[150, 150], [150, 300]]", "[[300, 150]]"));
    assert!(e.starts_with("exp.toml:12:23:"), "{e}");
    assert!(e.contains("0 < min <= max"), "{e}");
    let e = error_of(&GOOD.replace("[[150, 150], [150, 300]]", "[-5, 10]"));
    assert!(e.contains("0 < min <= max"), "{e}");
}

#[test]
fn too_small_cluster_is_refused() {
    let e = error_of(&GOOD.replace("nodes = [3, 5]", "nodes = [2]"));
    assert!(e.starts_with("exp.toml:9:9:"), "{e}");
    assert!(e.contains("at least 3 nodes"), "{e}");
}

const THROUGHPUT: &str = r#"
[experiment]
name = "t"
kind = "throughput"
mode = ["sim", "quic"]
trials = 1

[cluster]
protocol = "raft"
nodes = [3, 5]

[faults]
schedule = [{ action = "crash", at_ms = 10, node = "leader" }, { action = "restart", at_ms = 20, node = 2 }]
"#;

#[test]
fn restart_in_quic_mode_needs_disk_storage() {
    let e = error_of(THROUGHPUT);
    assert!(e.contains("storage = \"disk\""), "{e}");
    let ok = THROUGHPUT.replace("nodes = [3, 5]", "nodes = [3, 5]\nstorage = \"disk\"");
    assert_eq!(parse(&ok).unwrap().points().len(), 4, "2 modes x 2 sizes");
}

#[test]
fn namespaces_are_for_real_processes_only() {
    let sim_only = THROUGHPUT
        .replace("mode = [\"sim\", \"quic\"]", "mode = \"sim\"")
        .replace("[faults]", "[network]\nnetem = true\n\n[faults]");
    let e = error_of(&sim_only);
    assert!(e.starts_with("exp.toml:5:8:") && e.contains("mode = \"quic\""), "{e}");
}

#[test]
fn schedule_nodes_must_exist_in_every_cluster() {
    let e = error_of(
        &THROUGHPUT.replace("node = 2 }", "node = 4 }").replace("nodes = [3, 5]", "nodes = [3, 5]\nstorage = \"disk\""),
    );
    assert!(e.contains("node 4") && e.contains("0..2"), "{e}");
    let e = error_of(&THROUGHPUT.replace("action = \"crash\"", "action = \"explode\""));
    assert!(e.contains("explode") && e.contains("partition"), "{e}");
}

#[test]
fn an_election_experiment_needs_its_crash() {
    let e =
        error_of(&GOOD.replace("crash = { who = \"leader\", at = \"random-in-heartbeat\" }", "lagging_followers = 0"));
    assert!(e.contains("needs `crash`"), "{e}");
}

#[test]
fn f_gives_2f_plus_1_raft_nodes() {
    let e = parse(&GOOD.replace("nodes = [3, 5]", "f = [1, 2]")).unwrap();
    let sizes: Vec<u32> = e.points().iter().map(|p| p.nodes).collect();
    assert_eq!(sizes, vec![3, 3, 5, 5]);
}

const ATTACK: &str = r#"
[experiment]
name = "a"
kind = "attack"
trials = 2

[cluster]
protocol = ["raft", "pbft"]
f = 1

[attack]
raft = ["double-vote", "forge-log"]
pbft = "equivocate"
malicious = [1, 2]

[workload]
clients = 2
"#;

#[test]
fn attack_points_pair_each_protocol_with_its_own_attacks() {
    let e = parse(ATTACK).unwrap();
    let points: Vec<(String, u32, String, u32)> = e
        .points()
        .iter()
        .map(|p| (p.protocol.name().to_string(), p.nodes, attack::axes(p).attack.label(), attack::axes(p).malicious))
        .collect();
    assert_eq!(
        points,
        [
            ("raft".into(), 3, "double-vote".into(), 1),
            ("raft".into(), 3, "double-vote".into(), 2),
            ("raft".into(), 3, "forge-log".into(), 1),
            ("raft".into(), 3, "forge-log".into(), 2),
            ("pbft".into(), 4, "equivocate".into(), 1),
            ("pbft".into(), 4, "equivocate".into(), 2),
        ]
    );
}

#[test]
fn an_unknown_attack_names_line_column_and_the_protocols_attacks() {
    let e = error_of(&ATTACK.replace("\"forge-log\"", "\"forge-logs\""));
    assert!(e.starts_with("exp.toml:12:8:"), "{e}");
    assert!(e.contains("unknown raft attack \"forge-logs\"") && e.contains("lie-log-freshness"), "{e}");
    let e = error_of(&ATTACK.replace("pbft = \"equivocate\"\n", ""));
    assert!(e.contains("[attack] needs `pbft`") && e.contains("view-inflation"), "{e}");
    // Real mode runs attacks too (issue 20).
    parse(&ATTACK.replace("kind = \"attack\"", "kind = \"attack\"\nmode = [\"sim\", \"quic\"]")).unwrap();
    // The leader fault starts inside the attack window and ends by the end of the run.
    let faulted = ATTACK.replace("malicious = [1, 2]", "malicious = [1, 2]\nleader_fault = [\"none\", \"isolate\"]");
    let e = error_of(&faulted.replace("leader_fault = ", "leader_fault_at_ms = 3500\nleader_fault = "));
    assert!(e.starts_with("exp.toml:15:") && e.contains("inside the attack window"), "{e}");
    let e = error_of(&faulted.replace("leader_fault = ", "leader_fault_for_ms = 9000\nleader_fault = "));
    assert!(e.starts_with("exp.toml:15:") && e.contains("end by the end of the run (6000 ms)"), "{e}");
    let e = error_of(&faulted.replace("\"isolate\"]", "\"isolated\"]"));
    assert!(e.contains("isolated") && e.contains("isolate"), "{e}");
    let points: Vec<(String, u32, String)> = parse(&faulted)
        .unwrap()
        .points()
        .iter()
        .filter(|p| p.protocol.name() == "raft" && attack::axes(p).attack.label() == "forge-log")
        .map(|p| (attack::axes(p).attack.label(), attack::axes(p).malicious, attack::axes(p).leader_fault.to_string()))
        .collect();
    assert_eq!(
        points,
        [
            ("forge-log".into(), 1, "none".into()),
            ("forge-log".into(), 1, "isolate".into()),
            ("forge-log".into(), 2, "none".into()),
            ("forge-log".into(), 2, "isolate".into()),
        ]
    );
    let e = error_of(&ATTACK.replace("malicious = [1, 2]", "malicious = 3"));
    assert!(e.contains("malicious must be between 1 and nodes - 1"), "{e}");
    // The keys of [attack] besides the window and the count are the protocol list's names.
    let e = error_of(&ATTACK.replace("pbft = \"equivocate\"", "pbtf = \"equivocate\""));
    assert!(e.starts_with("exp.toml:11:1:"), "{e}");
    assert!(e.contains("unknown field `pbtf`") && e.contains("`pbft`") && e.contains("`multipaxos`"), "{e}");
    assert!(!e.contains("unreplicated"), "the baseline has no attacks to name: {e}");
}

/// The annotated example of docs/experiments.md is a file `qlab` accepts, so the
/// documentation cannot drift from the parser; as a quic-mode file with an ablation it is refused
/// until it says allow_ablations.
#[test]
fn the_docs_example_parses_and_ablations_need_consent_in_real_mode() {
    let page = include_str!("../../../docs/experiments.md");
    let start = page.find("## Writing an experiment").expect("the section");
    let block = &page[start..];
    let block = &block[block.find("```toml\n").expect("a toml block") + 8..];
    let example = &block[..block.find("```").expect("its end")];
    let e = parse(example).unwrap_or_else(|e| panic!("the docs/experiments.md example: {e}"));
    assert!(!e.points().is_empty());
    let ablated = example.replace("vote_without_log_check = false", "vote_without_log_check = true");
    let ablated = ablated.replace("mode = \"sim\"", "mode = \"quic\"");
    let error = error_of(&ablated);
    assert!(error.contains("[raft.ablate] switches off a safety rule") && error.contains("allow_ablations"), "{error}");
    assert!(parse(&ablated.replace("allow_ablations = false", "allow_ablations = true")).is_ok());
    let sim_only = example.replace("mode = [\"sim\", \"quic\"]", "mode = \"sim\"");
    let sim_only = sim_only
        .lines()
        .filter(|l| !l.starts_with("storage =") && !l.starts_with("quic_delay_ms") && !l.starts_with("netem_jitter_ms"))
        .collect::<Vec<_>>()
        .join("\n");
    let e = parse(&sim_only.replace("skip_phase1_values = false", "skip_phase1_values = true")).unwrap();
    assert!(
        <qlab_lab::protocol_list::Paxos as qlab_lab::protocols::LabProtocol>::config(&e.points()[0], &e.file)
            .ablate
            .skip_phase1_values
    );
    let typo = error_of(&example.replace("skip_prev_log_check", "skip_prev_log"));
    assert!(typo.contains("unknown field `skip_prev_log`") && typo.contains("skip_prev_log_check"), "{typo}");
}

/// `[paxos]` and `[pbft]` are the protocols' own (their `LabProtocol::Sections`), not
/// the config's: read with line and column, checked by the protocol's rules, switched-off
/// safety rules refused in real mode, and their knobs reach the protocol's configuration.
#[test]
fn a_protocols_own_section_is_read_checked_and_configures_it() {
    use qlab_lab::protocols::LabProtocol;
    let pbft = GOOD.replace("protocol = \"raft\"", "protocol = \"pbft\"").replace("nodes = [3, 5]", "nodes = 4");
    let with = |table: &str| pbft.replace("[faults]", &format!("{table}\n\n[faults]"));
    let e = parse(&with("[pbft]\nlog_window = 256\ncheckpoint_interval = 16")).unwrap();
    let config = <qlab_lab::protocol_list::Pbft as LabProtocol>::config(&e.points()[0], &e.file);
    assert_eq!((config.log_window, config.checkpoint_interval), (256, 16));
    let line_of = |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let text = with("[pbft]\nlog_windw = 256");
    let typo = error_of(&text);
    assert!(
        typo.contains(&format!(":{}:", line_of(&text, "log_windw"))) && typo.contains("unknown field `log_windw`"),
        "{typo}"
    );
    let text = with("[pbft]\nlog_window = 8");
    let rule = error_of(&text);
    assert!(
        rule.contains(&format!(":{}:", line_of(&text, "[pbft]"))) && rule.contains("log_window >= checkpoint_interval"),
        "{rule}"
    );
    let quic = with("[pbft.ablate]\nprepare_quorum_2f = true")
        .replace("kind = \"election\"", "kind = \"election\"\nmode = \"quic\"");
    let refused = error_of(&quic);
    assert!(refused.contains("[pbft.ablate] switches off a safety rule"), "{refused}");
    // Without the protocol list's sections a file's `[pbft]` would be an unknown table.
    assert!(!qlab_lab::config::COMMON_SECTIONS.contains(&"pbft"));
    assert_eq!(<qlab_lab::protocol_list::Pbft as LabProtocol>::SECTIONS, &["pbft"]);
}

/// Every block of docs/experiments.md's "The sections a kind owns" is a file of its kind
/// that `qlab` accepts, whose section the kind claims: moved into another kind's file it
/// is refused at its line, naming the sections that kind takes.
#[test]
fn each_kinds_own_section_in_the_docs_parses_and_belongs_to_its_kind_only() {
    let page = include_str!("../../../docs/experiments.md");
    let start = page.find("### The sections a kind owns").expect("the section");
    let end = start + page[start..].find("Mistakes are refused").expect("its end");
    let blocks: Vec<&str> = page[start..end].split("```toml\n").skip(1).map(|b| &b[..b.find("```").unwrap()]).collect();
    let mut kinds = Vec::new();
    for block in &blocks {
        let e = parse(block).unwrap_or_else(|e| panic!("docs/experiments.md block:\n{block}\n{e}"));
        assert!(!e.points().is_empty(), "{block}");
        let own = e.kind.sections();
        assert_eq!(own.len(), 1, "{block}");
        assert!(block.contains(&format!("[{}]", own[0])), "{block}");
        kinds.push(e.kind.name());
        // The same section in an election file is another kind's, and refused there.
        let section = &block[block.find(&format!("[{}]", own[0])).unwrap()..];
        let misplaced = format!("{GOOD}\n{section}");
        let error = error_of(&misplaced);
        assert!(
            error.contains(&format!("unknown section [{}]: a file of kind = \"election\" takes", own[0]))
                && error.contains("[faults]"),
            "{error}"
        );
    }
    kinds.sort_unstable();
    assert_eq!(kinds, ["attack", "attack-chaos", "availability", "chaos", "counterexample", "disruption", "reads"]);
}

const DISRUPTION: &str = r#"
[experiment]
name = "d"
kind = "disruption"
trials = 1

[cluster]
protocol = ["raft", "multipaxos"]
nodes = 5

[raft]
pre_vote = [false, true]

[workload]
duration_ms = 2000

[[disruption.scenario]]
name = "rejoin"
schedule = [
{ action = "isolate", at_ms = 500, node = "follower" },
{ action = "heal", at_ms = 1500 },
]

[[disruption.scenario]]
name = "handover"
schedule = [{ action = "transfer-leader", at_ms = 500, to = 1 }]
"#;

#[test]
fn disruption_sweeps_scenarios_and_pre_vote_for_raft_only() {
    let points: Vec<(ProtocolName, bool, String)> = parse(DISRUPTION)
        .unwrap()
        .points()
        .iter()
        .map(|p| (p.protocol, p.pre_vote, disruption::scenario(p).to_string()))
        .collect();
    let raft = ProtocolName::Raft;
    let paxos = ProtocolName::Multipaxos;
    assert_eq!(
        points,
        [
            (raft, false, "rejoin".to_string()),
            (raft, false, "handover".to_string()),
            (raft, true, "rejoin".to_string()),
            (raft, true, "handover".to_string()),
            (paxos, false, "rejoin".to_string()),
            (paxos, false, "handover".to_string()),
        ]
    );
}

/// The scenarios run on real processes too: `mode = ["sim", "quic"]` gives each
/// scenario a point per mode.
#[test]
fn disruption_scenarios_run_in_both_modes() {
    let text = DISRUPTION.replace("kind = \"disruption\"", "kind = \"disruption\"\nmode = [\"sim\", \"quic\"]");
    let points = parse(&text).unwrap().points();
    let modes = |mode: Mode| points.iter().filter(|p| p.mode == mode).count();
    assert_eq!((modes(Mode::Sim), modes(Mode::Quic)), (6, 6));
}

#[test]
fn disruption_files_are_checked_with_line_and_column() {
    let cases = [
        (
            DISRUPTION.replace("[\"raft\", \"multipaxos\"]", "\"pbft\"\nf = 1").replace("nodes = 5\n", ""),
            "protocol is \"raft\"",
        ),
        (DISRUPTION.replace("name = \"handover\"", "name = \"rejoin\""), "a name of its own"),
        (DISRUPTION.replace("to = 1", "to = \"leader\""), "not \"leader\""),
        (DISRUPTION.replace("to = 1", "to = 7"), "the schedule names node 7"),
        (DISRUPTION.replace("at_ms = 1500", "at_ms = 2500"), "at or after the run's end"),
        (DISRUPTION.replace("node = \"follower\"", "node = \"someone\""), "\"follower\""),
        (
            DISRUPTION.replace(
                "[[disruption.scenario]]\nname = \"handover\"",
                "[faults]\n[[disruption.scenario]]\nname = \"handover\"",
            ),
            "takes no [faults]",
        ),
    ];
    for (file, expected) in cases {
        let e = error_of(&file);
        assert!(e.starts_with("exp.toml:") && e.contains(expected), "{expected}: {e}");
    }
    let e = error_of(DISRUPTION.split("[[disruption.scenario]]").next().unwrap());
    assert!(e.contains("needs at least one [[disruption.scenario]]"), "{e}");
}

#[test]
fn availability_sweeps_failures_up_to_the_cluster_size_in_the_simulator_only() {
    let file = r#"
[experiment]
name = "a"
kind = "availability"
trials = 1

[cluster]
protocol = "raft"
nodes = [2, 3]

[availability]
failures = [1, 3]
"#;
    let points: Vec<(u32, u32)> =
        parse(file).unwrap().points().iter().map(|p| (p.nodes, availability::failures(p))).collect();
    assert_eq!(points, [(2, 1), (3, 1), (3, 3)]);
    let e =
        error_of(&file.replace("protocol = \"raft\"", "protocol = \"pbft\"\nf = 1").replace("nodes = [2, 3]\n", ""));
    assert!(e.contains("protocol is \"raft\" or \"multipaxos\""), "{e}");
    let e = error_of(&file.replace("kind = \"availability\"", "kind = \"availability\"\nmode = \"quic\""));
    assert!(e.contains("availability experiments run in the simulator"), "{e}");
    let e = error_of(&file.replace("failures = [1, 3]", "failures = 4"));
    assert!(e.contains("every value of failures exceeds every cluster size"), "{e}");
    let e = error_of(&file.replace("failures = [1, 3]", "failures = [1]\nduration = 5"));
    assert!(e.contains("unknown field `duration`") && e.contains("duration_ms"), "{e}");
}

#[test]
fn counterexample_files_name_cases_and_nothing_the_cases_fix_themselves() {
    let file = r#"
[experiment]
name = "cx"
kind = "counterexample"
trials = 5

[counterexample]
cases = ["two-nodes", "fixed-timeout"]
"#;
    let e = parse(file).unwrap();
    let cases: Vec<_> = e.points().iter().map(|p| p.axes::<counterexample::CaseAxes>().unwrap().case.name()).collect();
    assert_eq!(cases, ["two-nodes", "fixed-timeout"]);
    let e = error_of(&file.replace("\"two-nodes\"", "\"three-nodes\""));
    assert!(e.contains("unknown variant `three-nodes`") && e.contains("minority-leader-rollback"), "{e}");
    assert!(e.starts_with("exp.toml:8:"), "{e}");
    let e =
        error_of(&file.replace("[counterexample]", "[cluster]\nprotocol = \"raft\"\nnodes = 3\n\n[counterexample]"));
    assert!(e.contains("[cluster] nodes would be ignored") && e.starts_with("exp.toml:9:1:"), "{e}");
    let e = error_of(&file.replace("[counterexample]\ncases = [\"two-nodes\", \"fixed-timeout\"]\n", ""));
    assert!(e.contains("needs [counterexample] cases") && e.contains("six-vs-five"), "{e}");
    let e = error_of(&file.replace("kind = \"counterexample\"", "kind = \"counterexample\"\nmode = \"quic\""));
    assert!(e.contains("counterexample experiments run in the simulator"), "{e}");
}

#[test]
fn reads_sweep_modes_faults_and_skew_and_refuse_what_chaos_runs_ignore() {
    let file = r#"
[experiment]
name = "r"
kind = "reads"
trials = 1

[cluster]
protocol = ["raft", "multipaxos"]
nodes = 3

[raft]
read_mode = ["read-index", "lease"]
lease_drift_bound_ppm = 20000

[reads]
fault_profile = ["none", "isolate-leader"]
clock_skew_ppm = [0, 300000]
readers = 1

[workload]
clients = 3
"#;
    let e = parse(file).unwrap();
    assert_eq!(e.points().len(), 2 * 2 * 2 * 2);
    let last = e.points().pop().unwrap();
    assert_eq!(
        (last.protocol, last.read_mode, reads::axes(&last).fault_profile, reads::axes(&last).clock_skew_ppm),
        (ProtocolName::Multipaxos, ReadMode::Lease, FaultProfile::IsolateLeader, 300_000)
    );
    assert_eq!(
        <qlab_lab::protocol_list::Raft as qlab_lab::protocols::LabProtocol>::config(&last, &e.file)
            .lease_drift_bound_ppm,
        20_000
    );
    let at = |e: &str, line: usize| assert!(e.contains(&format!("exp.toml:{line}:")), "{e}");
    let e = error_of(&file.replace("\"lease\"]", "\"stale\"]"));
    assert!(e.contains("unknown variant `stale`") && e.contains("follower-stale"), "{e}");
    at(&e, 12);
    let e = error_of(&file.replace("\"none\",", "\"sometimes\","));
    assert!(e.contains("isolate-leader"), "{e}");
    let e = error_of(&file.replace("[workload]\n", "[workload]\nthink_ms = 3\n"));
    assert!(e.contains("[workload] think_ms would be ignored") && e.contains("allowed in [workload]: clients"), "{e}");
    at(&e, 21);
    let e = error_of(&file.replace("[reads]", "[network]\nloss = 0.1\n\n[reads]"));
    assert!(e.contains("[network] loss would be ignored"), "{e}");
    let e = error_of(&file.replace("readers = 1", "readers = 4"));
    assert!(e.contains("readers = 4 exceeds the clients"), "{e}");
    let e = error_of(&file.replace("[0, 300000]", "[0, 1000000]"));
    assert!(e.contains("clock_skew_ppm must be below 1000000"), "{e}");
    let e = error_of(&file.replace("\"multipaxos\"]", "\"pbft\"]").replace("nodes = 3", "nodes = 4"));
    assert!(e.contains("PBFT orders reads like writes"), "{e}");
    let throughput = file.replace("kind = \"reads\"", "kind = \"throughput\"");
    let e = error_of(&throughput[..throughput.find("[reads]").unwrap()]);
    assert!(e.contains("read_mode \"read-index\" is for kind = \"reads\""), "{e}");
    let e = error_of(&throughput);
    assert!(e.contains("unknown section [reads]: a file of kind = \"throughput\""), "{e}");
    let e = error_of(&file.replace("[reads]", "[faults]\nschedule = []\n\n[reads]"));
    assert!(e.contains("a reads experiment takes no [faults]"), "{e}");
}

#[test]
fn attacks_with_parameters_are_tables_and_label_their_rows() {
    let file = ATTACK.replace(
        "pbft = \"equivocate\"",
        "pbft = [\"equivocate\", { name = \"equivocate\", malicious = 2 }, { name = \"selective-drop\", to = [3] },\n        \
         { name = \"delay\", delay_ms = 250 }]",
    );
    let e = parse(&file).unwrap();
    let pbft: Vec<(String, u32)> = e
        .points()
        .iter()
        .filter(|p| p.nodes == 4)
        .map(|p| (attack::axes(p).attack.label(), attack::axes(p).malicious))
        .collect();
    assert_eq!(
        pbft,
        [
            ("equivocate".into(), 1),
            ("equivocate".into(), 2),
            ("equivocate".into(), 2),
            ("selective-drop(to=3)".into(), 1),
            ("selective-drop(to=3)".into(), 2),
            ("delay(250ms)".into(), 1),
            ("delay(250ms)".into(), 2),
        ]
    );
    let delay = e.points().into_iter().find(|p| attack::axes(p).attack.name == "delay").unwrap();
    assert_eq!(attack::axes(&delay).attack.params().delay_ns, qlab_core::ms(250));

    let e = error_of(&file.replace("to = [3]", "to = []"));
    assert!(e.starts_with("exp.toml:13:8:") && e.contains("selective-drop needs `to`"), "{e}");
    let e = error_of(&file.replace("to = [3]", "to = [0]"));
    assert!(e.contains("the replicas it starves must be honest ones, 1 to 3"), "{e}");
    let e = error_of(&file.replace("delay_ms = 250", "delay_ms = 0"));
    assert!(e.contains("delay needs `delay_ms` > 0"), "{e}");
    let e = error_of(&file.replace("malicious = 2 }", "malicious = 2, delay_ms = 5 }"));
    assert!(e.contains("`delay_ms` applies to delay only"), "{e}");
    let e = error_of(&file.replace("malicious = 2 }", "malicous = 2 }"));
    assert!(e.contains("unknown field `malicous`") && e.contains("malicious"), "{e}");
    let e = error_of(&file.replace("\"equivocate\", {", "3, {"));
    assert!(e.contains("an attack is a name"), "{e}");
}

const OPEN_LOOP: &str = r#"
[experiment]
name = "open"
kind = "throughput"
trials = 1

[cluster]
protocol = "raft"
nodes = 3

[workload]
arrival = "poisson"
rate_per_s = [1000, 2000, 4000]
clients = 64
"#;

/// Open-loop load (issue 20, item 5): `rate_per_s` is a sweep axis, `clients` bounds
/// what is outstanding; the file is refused at the right key when the two arrival
/// models' keys are mixed, and by every kind but throughput.
#[test]
fn open_loop_load_sweeps_its_rate_and_refuses_what_does_not_belong_to_it() {
    let rates: Vec<Option<f64>> = parse(OPEN_LOOP).unwrap().points().iter().map(|p| p.rate_per_s).collect();
    assert_eq!(rates, vec![Some(1000.0), Some(2000.0), Some(4000.0)]);
    let closed = parse(&OPEN_LOOP.replace("arrival = \"poisson\"\nrate_per_s = [1000, 2000, 4000]\n", "")).unwrap();
    assert!(closed.points().iter().all(|p| p.rate_per_s.is_none()));

    let e = error_of(&OPEN_LOOP.replace("rate_per_s = [1000, 2000, 4000]\n", ""));
    assert!(e.starts_with("exp.toml:12:") && e.contains("needs rate_per_s"), "{e}");
    let e = error_of(&OPEN_LOOP.replace("arrival = \"poisson\"\n", ""));
    assert!(e.starts_with("exp.toml:12:") && e.contains("rate_per_s is the offered load"), "{e}");
    let e = error_of(&OPEN_LOOP.replace("2000", "0"));
    assert!(e.starts_with("exp.toml:13:") && e.contains("rate_per_s must be > 0, got 0"), "{e}");
    let e = error_of(&OPEN_LOOP.replace("clients = 64", "clients = 64\nthink_ms = 5"));
    assert!(e.starts_with("exp.toml:15:") && e.contains("think_ms is a closed-loop client's pause"), "{e}");
    let e = error_of(&OPEN_LOOP.replace("poisson", "uniform"));
    assert!(e.starts_with("exp.toml:12:") && e.contains("closed") && e.contains("poisson"), "{e}");
    // An election's clients write until the crash; it would ignore the arrival model.
    let election = GOOD.to_string() + "\n[workload]\nclients = 2\narrival = \"poisson\"\nrate_per_s = 100\n";
    let e = error_of(&election);
    assert!(e.contains("arrival"), "{e}");
}

/// Wide-area placement (issue 20, item 4): `regions` with the built-in table or a
/// matrix of its own; its companions need it, it refuses other delay sources, and
/// `leader_region` is a throughput sweep over the listed regions.
#[test]
fn regions_place_nodes_and_refuse_what_would_contradict_them() {
    let wan = OPEN_LOOP.replace(
        "[workload]",
        "[network]\nregions = [\"east-us\", \"west-europe\", \"japan-east\"]\nleader_region = [\"east-us\", \"japan-east\"]\n\n[workload]",
    );
    let parsed = parse(&wan).unwrap();
    let placed: Vec<Option<String>> = parsed.points().iter().map(|p| p.leader_region.clone()).collect();
    assert_eq!(placed.len(), 6, "3 rates × 2 leader regions");
    assert!(placed.contains(&Some("japan-east".into())));
    let map = parsed.file.network.region_map().unwrap();
    assert_eq!(map.node_to_node_ms(0, 1), 44.5);

    let e = error_of(&wan.replace("\"japan-east\"]\nleader", "\"mars\"]\nleader"));
    assert!(e.starts_with("exp.toml:12:") && e.contains("unknown region \"mars\""), "{e}");
    let e = error_of(&wan.replace("leader_region = [\"east-us\", \"japan-east\"]", "leader_region = \"west-us\""));
    assert!(e.starts_with("exp.toml:13:") && e.contains("\"west-us\" is not one of the regions"), "{e}");
    let e = error_of(&wan.replace("[network]\n", "[network]\nlatency_ms = { dist = \"constant\", value = 5.0 }\n"));
    assert!(e.contains("latency_ms and `regions` both set link delays"), "{e}");
    let e = error_of(&OPEN_LOOP.replace("[workload]", "[network]\njitter_ms = 2.0\n\n[workload]"));
    assert!(e.contains("jitter_ms places nodes in regions; it needs `regions`"), "{e}");
    let matrix = wan
        .replace(
            "\"east-us\", \"west-europe\", \"japan-east\"]",
            "\"a\", \"b\", \"c\"]\nrtt_ms_matrix = [[0, 10, 20], [10, 0, 30]]",
        )
        .replace("leader_region = [\"east-us\", \"japan-east\"]", "leader_region = \"c\"");
    let e = error_of(&matrix);
    assert!(e.contains("rtt_ms_matrix must be 3 × 3"), "{e}");
    let map =
        parse(&matrix.replace("[10, 0, 30]]", "[10, 0, 30], [20, 30, 0]]")).unwrap().file.network.region_map().unwrap();
    assert_eq!(map.node_to_node_ms(1, 2), 15.0);
    // An election cannot place its leader: it measures losing one.
    let election = GOOD.replace(
        "[faults]",
        "[network]\nregions = [\"east-us\", \"west-us\"]\nleader_region = \"east-us\"\n\n[faults]",
    );
    let e = error_of(&election);
    assert!(e.contains("election experiments do not place one (throughput does)"), "{e}");
}
