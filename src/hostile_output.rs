//! hostile_output (tests only): every parser of a host's output takes any bytes without
//! panicking. The facts parser, the scan's parser with the findings and checks made from it,
//! and each resource type's probe parser (`diff`) get random bytes, and random lines made of
//! the words their own probe script prints (so that the parsers get past their first checks)
//! mixed with multi-byte characters, escapes and huge numbers.

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::resource::{Resource, TYPES};

/// One resource of every type, with parameters that build.
fn every_type() -> Vec<Box<dyn Resource>> {
    let key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    let params = |name: &str| -> Value {
        match name {
            "file" => json!({"path": "/etc/motd", "content": "hi\n", "mode": "0644"}),
            "directory" => json!({"path": "/srv/x", "mode": "0755"}),
            "absent" => json!({"path": "/etc/old"}),
            "lines" => {
                json!({"path": "/etc/login.defs", "present": ["UMASK 027"], "absent": ["x"]})
            }
            "user" => json!({"name": "admin", "groups": ["sudo"], "shell": "/bin/bash",
                             "authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA a"]}),
            "group" => json!({"name": "staff"}),
            "command" => json!({"run": "true", "creates": "/x", "unless": "true"}),
            "package" => json!({"names": ["nftables", "curl"]}),
            "service" => json!({"name": "ssh", "enabled": true, "state": "started"}),
            "unit" => json!({"name": "x.service", "content": "[Service]\nExecStart=/bin/true\n",
                             "enabled": true, "state": "started"}),
            "sysctl" => json!({"values": {"net.ipv4.ip_forward": 0, "kernel.kptr_restrict": 2}}),
            "sshd" => json!({"settings": {"PermitRootLogin": "no", "Port": 22}}),
            "nftables" => json!({"ruleset": "table inet filter {\n}\n"}),
            "audit_rules" => json!({"rules": ["-w /etc/passwd -p wa -k identity"]}),
            "json_config" => json!({"path": "/etc/x.json", "settings": {"a": {"b": 1}}}),
            "wireguard" => {
                json!({"interface": "wg0", "address": "10.9.0.1/24", "listen_port": 51820,
                                  "peers": [{"public_key": key, "allowed_ips": ["10.9.0.2/32"],
                                             "endpoint": "10.203.0.1:51820"}]})
            }
            other => panic!("no parameters for the new type `{other}`: add them here"),
        }
    };
    TYPES
        .iter()
        .map(|t| (t.build)(params(t.name)).unwrap_or_else(|e| panic!("{}: {e}", t.name)))
        .collect()
}

/// The words a probe script prints (`mode=`, `state`, `sha256`, ...): what its parser looks
/// for.
fn words(script: &str) -> Vec<String> {
    let mut w: Vec<String> = script
        .split(|c: char| !(c.is_ascii_alphanumeric() || "_=:-./".contains(c)))
        .filter(|w| !w.is_empty() && w.len() < 40)
        .map(String::from)
        .collect();
    w.sort();
    w.dedup();
    w
}

/// Text a hostile host could print: lines of known words (some with a multi-byte character
/// or an escape put inside them, where byte slicing breaks), numbers and junk.
fn hostile_text(vocabulary: Vec<String>) -> impl Strategy<Value = String> {
    let odd = || proptest::sample::select(vec!["é", "€", "😀", "\x1b", "\u{9b}", "\r", "\0"]);
    let piece = prop_oneof![
        4 => proptest::sample::select(vocabulary.clone()),
        3 => (proptest::sample::select(vocabulary), any::<usize>(), odd(), 0usize..40).prop_map(
            |(w, at, c, pad)| {
                // The word, padded with its own last character, with `c` inside.
                let mut w = w;
                let last = w.chars().last().unwrap_or('A');
                w.extend(std::iter::repeat_n(last, pad));
                let at = at % (w.chars().count() + 1);
                let i = w.char_indices().nth(at).map(|(i, _)| i).unwrap_or(w.len());
                w.insert_str(i, c);
                w
            }
        ),
        // Base64-, hex- and path-like words dense with multi-byte characters.
        3 => "[A-Za-z0-9:+/=.é€😀]{1,40}",
        1 => "[0-9A-Fé]{8,40}:[0-9A-F]{4}",
        1 => Just("18446744073709551616".to_string()),
        1 => Just("-1".to_string()),
        1 => "[0-9]{1,3}",
        1 => "[ -~]{0,12}",
        1 => any::<String>().prop_map(|s| s.chars().take(12).collect()),
    ];
    let sep = proptest::sample::select(vec![" ", " ", "=", "\t", ":", ",", ""]);
    let line = proptest::collection::vec((piece, sep), 1..8).prop_map(|parts| {
        let mut l: String = parts.into_iter().map(|(p, s)| format!("{p}{s}")).collect();
        l.push('\n');
        l
    });
    proptest::collection::vec(line, 0..40).prop_map(|lines| lines.concat())
}

fn bytes_as_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<u8>(), 0..512)
        .prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_facts_parser_takes_any_output(
        junk in bytes_as_text(),
        text in hostile_text(words(crate::facts::PROBE)),
    ) {
        for t in [junk, text] {
            if let Ok(f) = crate::facts::parse(&t) {
                let all = serde_json::to_string(&f).unwrap();
                prop_assert!(!all.contains('\u{1b}'), "{all}");
            }
        }
    }

    #[test]
    fn the_scan_parser_findings_and_checks_take_any_output(
        junk in bytes_as_text(),
        text in proptest::collection::vec(
            (
                proptest::sample::select(vec![
                    "proc_net tcp", "proc_net udp6", "ss", "passwd", "group",
                    "keys root /root/.ssh/authorized_keys", "sshd", "nft", "config x",
                    "env /etc/a.env", "secrets", "loose", "mode /etc/a.env", "skills /s",
                    "service x", "backup_timer x", "backup /b", "truncated config 9 x",
                    "incident yes", "audit_rules no", "upgrades", "audit_loaded",
                ]),
                hostile_text(
                    ["ssh-ed25519", "ssh-rsa", "AAAAAAAAAAA", "0A", "0100007F:0016", "0:",
                     "x:0:", "users:((\"p\",pid=1,fd=3))", "{\"gateway\":{\"bind\":\"lan\"}}",
                     "644", "root", "sudo:x:27:", "tcp", "LISTEN"]
                        .map(String::from)
                        .to_vec(),
                ),
            ),
            0..12,
        ).prop_map(|sections| {
            sections.into_iter().map(|(h, body)| format!("@@m {h}\n{body}")).collect::<String>()
        }),
    ) {
        let vars = json!({"agent_user": "openclaw", "agent_port": 18789,
                          "admin_keys": ["ssh-ed25519 AAAA a"]});
        let params = crate::inspect::scan::ScanParams::from_vars(vars.as_object().unwrap()).unwrap();
        for t in [junk, text] {
            let obs = crate::inspect::scan::parse("@@m", &t);
            let findings = crate::inspect::findings::findings(&obs, &params);
            let facts = crate::facts::Facts::default();
            crate::inspect::checks::checks(&obs, &params, &facts, &findings, None);
        }
    }

    #[test]
    fn every_probe_parser_takes_any_output(
        junk in bytes_as_text(),
        seeds in proptest::collection::vec(any::<u64>(), 1..4),
    ) {
        for r in every_type() {
            let _ = r.diff(&junk);
            // Lines of this type's own words, chosen by the seeds.
            let vocabulary = words(&r.probe().to_string());
            let text: String = seeds
                .iter()
                .flat_map(|s| {
                    let v = &vocabulary;
                    (0..8u64).map(move |i| {
                        let n = s.rotate_left((i * 8) as u32);
                        let w = &v[(n as usize) % v.len().max(1)];
                        match n % 5 {
                            0 => format!("{w}=é€\n"),
                            1 => format!("{w} {}\n", n),
                            2 => format!("{w}\t\x1b[31m"),
                            3 => format!("{w}={}\n", n % 7),
                            _ => format!("{w}:"),
                        }
                    })
                })
                .collect();
            let _ = r.diff(&text);
        }
    }

    #[test]
    fn every_probe_parser_takes_its_words_in_any_order(
        text in hostile_text(
            every_type().iter().flat_map(|r| words(&r.probe().to_string())).collect()
        ),
    ) {
        for r in every_type() {
            let _ = r.diff(&text);
        }
    }
}
