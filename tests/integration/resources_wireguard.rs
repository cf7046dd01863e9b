//! The `wireguard` resource on real hosts, through the library: the containers h17 and h18
//! (no WireGuard kernel module: wg-quick runs wireguard-go on /dev/net/tun) each get an
//! interface `rampwg0` with the other as peer, and ping each other through it. The private
//! keys are made on the hosts and never show in a probe's output or a verdict.

use rampart::resource::wireguard::WIREGUARD;
use rampart::resource::{ApplyContext, Resource, Verdict, converge_one};
use rampart::transport::Session;
use rampart::transport::ssh::SshSession;
use serde_json::{Value, json};

use super::common::*;

const A: &str = "h17";
const B: &str = "h18";
const IF: &str = "rampwg0";
const PORT: u16 = 51829;

fn wg_addr(host: &str) -> &'static str {
    if host == A { "10.99.7.1" } else { "10.99.7.2" }
}

fn wireguard(host: &str, peer: Option<(&str, &str)>) -> Box<dyn Resource> {
    let mut p = json!({"interface": IF, "address": format!("{}/24", wg_addr(host)),
                       "listen_port": PORT, "state": "present"});
    if let Some((other, key)) = peer {
        p["peers"] = json!([{
            "public_key": key,
            "endpoint": format!("{}:{PORT}", addr(other)),
            "allowed_ips": [format!("{}/32", wg_addr(other))],
            "persistent_keepalive": 5,
        }]);
    }
    (WIREGUARD.build)(p as Value).unwrap_or_else(|e| panic!("wireguard: {e}"))
}

fn ctx() -> ApplyContext {
    ApplyContext::new(format!("test-wireguard-{}", std::process::id()))
}

fn clean(host: &str) {
    ssh_root(
        host,
        &format!(
            "systemctl disable --now wg-quick@{IF} >/dev/null 2>&1; \
             rm -rf /etc/wireguard/{IF}.conf /etc/wireguard/{IF}.key \
             /etc/systemd/system/wg-quick@{IF}.service.d; systemctl daemon-reload; \
             systemctl reset-failed wg-quick@{IF} 2>/dev/null; true"
        ),
    );
}

/// Probes; the output must not hold the private key.
async fn probe(s: &SshSession, r: &dyn Resource, private: &str) -> String {
    let out = s
        .exec(
            &rampart::remote::exec_command(false),
            r.probe().render().unwrap().as_bytes(),
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(out.success(), "{}", out.stderr_block());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        private.is_empty() || !text.contains(private),
        "the probe shows the private key"
    );
    text
}

fn public_key_of(v: &Verdict) -> String {
    let Verdict::InLine(s) = v else {
        panic!("not in line: {v:?}")
    };
    s.split("public key ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .unwrap_or_else(|| panic!("no public key in {s:?}"))
        .to_string()
}

fn shows(v: &Verdict, secret: &str) -> bool {
    format!("{v:?}").contains(secret)
}

#[tokio::test]
async fn two_hosts_make_their_keys_peer_and_ping_through_the_tunnel() {
    clean(A);
    clean(B);
    let (sa, sb) = (root_session(A).await, root_session(B).await);

    // First round: no peers, keys made on the hosts.
    let mut keys = Vec::new();
    for (host, s) in [(A, &sa), (B, &sb)] {
        let r = wireguard(host, None);
        let (before, after) = converge_one(s, &*r, &ctx())
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert!(matches!(before, Verdict::Create(_)), "{host}: {before:?}");
        assert!(
            before
                .changes()
                .iter()
                .any(|c| c.field == "private key" && c.before.is_none()),
            "{before:?}"
        );
        let public = public_key_of(&after);
        let private = ssh_root(host, &format!("cat /etc/wireguard/{IF}.key"));
        let private = private.trim().to_string();
        assert_eq!(private.len(), 44, "{host}: a key in the key file");
        assert_ne!(public, private);
        assert_eq!(
            ssh_root(
                host,
                &format!("stat -c %a /etc/wireguard/{IF}.key /etc/wireguard/{IF}.conf")
            ),
            "600\n600\n"
        );
        assert!(!shows(&before, &private) && !shows(&after, &private));
        let conf = ssh_root(host, &format!("cat /etc/wireguard/{IF}.conf"));
        assert!(
            !conf.contains(&private) && !conf.contains("PrivateKey"),
            "{conf}"
        );
        // No kernel module in the containers: wg-quick runs wireguard-go, by the drop-in.
        let env = ssh_root(
            host,
            &format!("systemctl show -p Environment --value wg-quick@{IF}; pgrep -x wireguard-go"),
        );
        assert!(
            env.contains("WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go"),
            "{host}: {env}"
        );
        probe(s, &*r, &private).await;
        keys.push((public, private));
    }

    // Second round: each with the other as peer.
    for (i, (host, other, s)) in [(A, B, &sa), (B, A, &sb)].into_iter().enumerate() {
        let peer_key = keys[1 - i].0.clone();
        let r = wireguard(host, Some((other, &peer_key)));
        let (before, after) = converge_one(s, &*r, &ctx())
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert!(matches!(before, Verdict::Modify(_)), "{host}: {before:?}");
        assert_eq!(public_key_of(&after), keys[i].0, "the key stays");
        for (_, private) in &keys {
            assert!(!shows(&before, private) && !shows(&after, private));
        }
    }

    let ping = ssh_root(
        A,
        &format!(
            "for i in 1 2 3 4 5; do ping -c1 -W2 {} >/dev/null 2>&1 && {{ echo ok; exit 0; }}; \
             sleep 1; done; echo failed; wg show {IF}",
            wg_addr(B)
        ),
    );
    assert!(ping.starts_with("ok"), "ping through the tunnel: {ping}");

    // A second converge is in line on both, and shows no private key.
    for (i, (host, other, s)) in [(A, B, &sa), (B, A, &sb)].into_iter().enumerate() {
        let r = wireguard(host, Some((other, &keys[1 - i].0)));
        let (before, _) = converge_one(s, &*r, &ctx())
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert!(before.is_in_line(), "{host}: {before:?}");
        assert_eq!(public_key_of(&before), keys[i].0);
        let out = probe(s, &*r, &keys[i].1).await;
        assert!(!out.contains(&keys[i].1));
    }

    clean(A);
    clean(B);
}
