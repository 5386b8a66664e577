//! The figures of a run and their JSON and table forms.

use serde_json::Value;

/// Nearest-rank percentile of sorted `v`.
pub(crate) fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

pub(crate) fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

pub(crate) struct Figures {
    pub(crate) nodes: usize,
    pub(crate) poll_ms: u64,
    /// How the watchers observed the FDBs: `stream`, or `poll <ms> ms` (an overlayd without the stream).
    pub(crate) observe: String,
    /// New MAC in the formed cluster, per MAC: commands → owner's FDB local, local → first other node's
    /// install, local → last other node's install.
    pub(crate) new_mac_steps: [Vec<f64>; 3],
    pub(crate) joined_per_node: Vec<f64>,
    pub(crate) known_per_node: Vec<f64>,
    pub(crate) known_from_appearance: Vec<f64>,
    pub(crate) new_mac_known: Vec<f64>,
    pub(crate) known_everywhere: f64,
    pub(crate) known_after_last_join: f64,
    pub(crate) withdraw_per_node: Vec<f64>,
    pub(crate) restart_reachable: Option<f64>,
    pub(crate) gossip_bps: Vec<f64>,
}

pub(crate) fn to_json(f: &Figures) -> Value {
    let s = |v: &[f64]| serde_json::json!({"p50": pct(v, 50.0), "p99": pct(v, 99.0), "max": pct(v, 100.0), "samples": v});
    serde_json::json!({
        "nodes": f.nodes,
        "poll_ms": f.poll_ms,
        "observe": f.observe,
        "new_mac_cmd_to_local_s": s(&f.new_mac_steps[0]),
        "new_mac_local_to_first_install_s": s(&f.new_mac_steps[1]),
        "new_mac_local_to_last_install_s": s(&f.new_mac_steps[2]),
        "joined_per_node_s": s(&f.joined_per_node),
        "mac_known_per_node_s": s(&f.known_per_node),
        "mac_known_everywhere_from_appearance_s": s(&f.known_from_appearance),
        "new_mac_known_everywhere_s": s(&f.new_mac_known),
        "mac_known_everywhere_s": f.known_everywhere,
        "mac_known_everywhere_after_last_join_s": f.known_after_last_join,
        "withdraw_killed_node_s": s(&f.withdraw_per_node),
        "restarted_node_reachable_s": f.restart_reachable,
        "gossip_tx_bytes_per_s_per_node": s(&f.gossip_bps),
    })
}

pub(crate) fn table(f: &Figures) -> String {
    let ms = |x: f64| format!("{:.0} ms", x * 1e3);
    let mut rows: Vec<[String; 4]> = vec![["metric".into(), "p50".into(), "p99".into(), "max".into()]];
    let mut stat = |name: &str, v: &[f64], fmt: &dyn Fn(f64) -> String| {
        rows.push([
            name.into(),
            fmt(pct(v, 50.0)),
            fmt(pct(v, 99.0)),
            fmt(pct(v, 100.0)),
        ]);
    };
    stat(
        "joined (admin up), per node (from its start)",
        &f.joined_per_node,
        &ms,
    );
    stat(
        "MAC known everywhere, per node (from its start)",
        &f.known_per_node,
        &ms,
    );
    stat(
        "MAC known everywhere, per MAC (from its appearance)",
        &f.known_from_appearance,
        &ms,
    );
    stat(
        "new MAC in formed cluster, known everywhere",
        &f.new_mac_known,
        &ms,
    );
    stat("  … commands until local at its owner", &f.new_mac_steps[0], &ms);
    stat(
        "  … local until the first other node has it",
        &f.new_mac_steps[1],
        &ms,
    );
    stat(
        "  … local until every other node has it",
        &f.new_mac_steps[2],
        &ms,
    );
    stat(
        "withdraw SIGKILLed node, per other node",
        &f.withdraw_per_node,
        &ms,
    );
    stat("gossip TX bytes/s per node (idle 10 s)", &f.gossip_bps, &|x| {
        format!("{x:.0} B/s")
    });
    rows.push([
        "every node knows every MAC (from joiners' launch)".into(),
        String::new(),
        String::new(),
        ms(f.known_everywhere),
    ]);
    rows.push([
        "  … of which after the last node joined".into(),
        String::new(),
        String::new(),
        ms(f.known_after_last_join),
    ]);
    rows.push([
        "restarted node reachable (ping from host 1)".into(),
        String::new(),
        String::new(),
        f.restart_reachable.map_or("not within 30 s".into(), ms),
    ]);
    let w: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "overlayd cluster, N = {} nodes, default timings (FDBs observed: {})\n",
        f.nodes, f.observe
    );
    for r in &rows {
        out += &format!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        );
    }
    out
}
