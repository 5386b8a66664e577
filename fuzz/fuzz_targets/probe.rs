//! The overlayd probe (`dataplane::wire::probe`) as the RX loop sees it, plus the query-string and
//! neighbour-table parsers of `overlayctl trace`.
#![no_main]
use dataplane::wire::probe::{is_probe_frame, ProbeRepr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if is_probe_frame(data) {
        if let Ok(p) = ProbeRepr::parse(data) {
            let mut buf = [0u8; 128];
            let n = p.emit(&mut buf, 0).unwrap_or(0);
            assert_eq!(ProbeRepr::parse(&buf[..n]).ok(), Some(p));
        }
    }
    let _ = ProbeRepr::parse(data);
    let text = String::from_utf8_lossy(data);
    let _ = overlayd::trace::query_param(&text, "dst");
    let _ = overlayd::trace::arp_lookup(&text, std::net::IpAddr::from([10, 1, 0, 2]), "ovl0");
});
