//! A minimal Prometheus text-format (0.0.4) checker, the test that it rejects malformed text, and [`scrape`]:
//! `overlayctl metrics` on a host, checked and parsed.

use crate::common::overlay::OVERLAYCTL;
use crate::common::testbed::{Host, Netns};
use std::collections::BTreeMap;

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// A label set without `le`, as a sortable key.
type LabelKey = Vec<(String, String)>;

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

/// Parses `{k="v",…}`; values may hold `\"`, `\\` and `\n` escapes.
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (k, r) = rest
            .split_once("=\"")
            .ok_or(format!("label without =\" in {s:?}"))?;
        if !valid_name(k) {
            return Err(format!("bad label name {k:?}"));
        }
        let mut v = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => v.push('\n'),
                    Some((_, c @ ('"' | '\\'))) => v.push(c),
                    other => return Err(format!("bad escape {other:?} in {s:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => v.push(c),
                None => return Err(format!("unterminated label value in {s:?}")),
            }
        };
        if out.insert(k.to_string(), v).is_some() {
            return Err(format!("duplicate label {k}"));
        }
        rest = &r[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Ok(out)
}

/// Checks the whole exposition: HELP/TYPE before samples, known types, valid names and labels, numeric
/// values, sample names matching their family's type, cumulative histogram buckets ending in `+Inf` = count.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut p = rest.splitn(3, ' ');
            match (p.next(), p.next(), p.next()) {
                (Some("HELP"), Some(n), _) if valid_name(n) => {}
                (Some("TYPE"), Some(n), Some(t)) if valid_name(n) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(err(format!("unknown type {t}")));
                    }
                    if types.insert(n.to_string(), t.to_string()).is_some() {
                        return Err(err("TYPE given twice".into()));
                    }
                }
                _ => return Err(err("malformed comment".into())),
            }
            continue;
        }
        let (head, value) = line.rsplit_once(' ').ok_or_else(|| err("no value".into()))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| err("value is not a number".into()))?,
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, l)) => (
                n,
                parse_labels(l.strip_suffix('}').ok_or_else(|| err("no closing }".into()))?).map_err(err)?,
            ),
            None => (head, BTreeMap::new()),
        };
        if !valid_name(name) {
            return Err(err("bad metric name".into()));
        }
        let family = types
            .keys()
            .filter(|f| name.starts_with(f.as_str()))
            .max_by_key(|f| f.len())
            .ok_or_else(|| err("sample before its TYPE".into()))?;
        let suffix = &name[family.len()..];
        let ok = match types[family].as_str() {
            "histogram" => ["_bucket", "_sum", "_count"].contains(&suffix),
            _ => suffix.is_empty(),
        };
        if !ok {
            return Err(err(format!("sample name does not fit family {family}")));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // Histogram buckets: cumulative, and +Inf equals _count, per label set.
    for (family, t) in &types {
        if t != "histogram" {
            continue;
        }
        let bucket = format!("{family}_bucket");
        let mut series: BTreeMap<LabelKey, Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.name == bucket) {
            let mut l = s.labels.clone();
            let le = l.remove("le").ok_or(format!("{bucket} without le"))?;
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| format!("le {le:?}"))?
            };
            series
                .entry(l.into_iter().collect())
                .or_default()
                .push((le, s.value));
        }
        for (l, b) in series {
            if !b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1) {
                return Err(format!("{family}{l:?}: buckets not cumulative: {b:?}"));
            }
            let count = samples
                .iter()
                .find(|s| {
                    s.name == format!("{family}_count")
                        && s.labels
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect::<Vec<_>>()
                            == l
                })
                .ok_or(format!("{family}{l:?}: no _count"))?;
            match b.last() {
                Some((le, n)) if le.is_infinite() && *n == count.value => {}
                other => {
                    return Err(format!(
                        "{family}{l:?}: last bucket {other:?} is not +Inf = {}",
                        count.value
                    ))
                }
            }
        }
    }
    Ok(samples)
}

/// The value of the first sample named `name` whose labels include `labels`.
pub(crate) fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// `overlayctl metrics` on `host`, parsed; panics naming the host when it is not Prometheus text.
pub(crate) fn scrape(host: &Host) -> Vec<Sample> {
    let text = host.run(OVERLAYCTL, &["metrics"]);
    parse_exposition(&text)
        .unwrap_or_else(|e| panic!("/metrics on {} is not Prometheus text: {e}\n{text}", host.ns()))
}

#[test]
fn exposition_checker_rejects_malformed_text() {
    let good = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\\\"w\"} 3\n\
# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n";
    let s = parse_exposition(good).unwrap();
    assert_eq!(s[0].labels["k"], "v\"w");
    for bad in [
        "a 1\n",                                                                          // no TYPE
        "# TYPE a counter\na{k=v} 1\n",                                                   // unquoted label
        "# TYPE a counter\na x\n",                                                        // not a number
        "# TYPE a bogus\n",                                                               // unknown type
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n", // not cumulative
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n",                       // +Inf != count
        "# TYPE a counter\na_extra 1\n",                                                  // wrong suffix
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}
