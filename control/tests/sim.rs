//! 32-node simulator scenarios (virtual clock, in-memory transport, seeded loss): membership and FDB
//! convergence, SIGKILL withdrawal, restart with a new generation, MAC move, partition + heal, and no
//! false deaths under 20 % loss. Times printed are virtual; assertions use the bounds only.

use std::time::Duration;

use control::sim::{mac, Sim, SimConfig};

const N: usize = 32;
const TICK: Duration = Duration::from_millis(10);

fn converged_cluster(seed: u64) -> Sim {
    let mut sim = Sim::new(
        N,
        SimConfig {
            seed,
            ..SimConfig::default()
        },
    );
    for i in 0..N {
        sim.set_macs(i, vec![mac(i, 1), mac(i, 2)]);
    }
    let t = sim.run_until(Duration::from_secs(60), TICK, |s| {
        s.membership_converged() && s.fdb_converged()
    });
    let t = t.expect("32 nodes converge (membership + FDB) within 60 s virtual");
    println!("seed {seed}: membership+FDB convergence in {:?} virtual", t);
    assert!(sim.errors.is_empty(), "{:?}", sim.errors);
    sim
}

#[test]
fn full_membership_and_fdb_convergence() {
    let sim = converged_cluster(1);
    assert!(sim.digests_equal());
    assert!(
        sim.deaths.is_empty(),
        "no deaths during bootstrap: {:?}",
        sim.deaths
    );
}
