//! Attach without `--ip`: addresses allocated from this host's IPAM blocks.

use super::{add_bridge, in_ns, ping_within, single_host, spec, state_dir, Ns};
use crate::testbed::Netns as _;
use overlayd::attach::{AttachError, Attachments};

/// Without `--ip`: addresses come from this host's blocks, skipping the network address and the gateway;
/// a full block says so; an explicit address in use is refused; a detached address is handed out again.
#[test]
fn allocating_attach_uses_the_blocks() {
    let tb = single_host();
    let h = tb.host(1);
    add_bridge(h, "ovbr10");
    let cs: Vec<Ns> = (1..=4).map(|i| Ns::new(&tb, &format!("f{i}"))).collect();
    let dir = state_dir(&tb, "alloc");
    let subnet: ipnet::IpNet = "10.20.0.0/16".parse().expect("subnet");
    let blocks: Vec<ipnet::IpNet> = vec!["10.20.0.0/30".parse().expect("block")];
    in_ns(h.ns(), || {
        let at = Attachments::open(&dir).expect("open");
        let any = |c: &Ns| spec(c.netns_ref(), "10.20.9.9/16", "eth0");
        let a0 = at.attach_allocating(any(&cs[0]), subnet, &blocks).expect("first");
        let a1 = at
            .attach_allocating(any(&cs[1]), subnet, &blocks)
            .expect("second");
        assert_eq!(a0.ip, Some("10.20.0.2/16".parse().expect("ip")));
        assert_eq!(a1.ip, Some("10.20.0.3/16".parse().expect("ip")));
        let e = at
            .attach_allocating(any(&cs[2]), subnet, &blocks)
            .expect_err("block full");
        assert!(
            matches!(e, AttachError::Ipam(overlayd::ipam::IpamError::BlockFull { .. })),
            "{e:?}"
        );
        assert!(e.to_string().contains("request another block"), "{e}");
        assert!(
            !cs[2].link_exists("eth0"),
            "nothing wired when no address is free"
        );
        let more = vec![blocks[0], "10.20.0.64/26".parse().expect("block")];
        let a2 = at
            .attach_allocating(any(&cs[2]), subnet, &more)
            .expect("next block");
        assert_eq!(a2.ip, Some("10.20.0.64/16".parse().expect("ip")));
        let e = at
            .attach(spec(cs[3].netns_ref(), "10.20.0.3/16", "eth0"))
            .expect_err("in use");
        assert!(matches!(e, AttachError::AddressInUse { .. }), "{e:?}");
        assert!(at.detach(&cs[1].netns_ref(), "blue", "eth0").expect("detach"));
        let a3 = at.attach_allocating(any(&cs[3]), subnet, &blocks).expect("reuse");
        assert_eq!(a3.ip, Some("10.20.0.3/16".parse().expect("ip")));
        assert!(ping_within(&cs[3], "10.20.0.2"));
        // A container that dies without a detach frees its address once the block runs full.
        cs[0].delete();
        let a4 = at
            .attach_allocating(any(&cs[1]), subnet, &blocks)
            .expect("reuse a dead one's");
        assert_eq!(a4.ip, Some("10.20.0.2/16".parse().expect("ip")));
        assert_eq!(at.list().len(), 3, "{:?}", at.list());
        for c in [&cs[1], &cs[2], &cs[3]] {
            assert!(at.detach(&c.netns_ref(), "blue", "eth0").expect("detach"));
        }
        assert!(at.list().is_empty());
    });
}
