//! kubernetes: `rampart schedule --kubernetes --shards N`, the nightly drift as a Kubernetes
//! CronJob whose Job is Indexed: `completions` = N shards, each pod runs `rampart drift` on
//! shard `JOB_COMPLETION_INDEX + 1` of `RAMPART_SHARDS` (see `shard.rs`) and writes its JSON
//! report to a shared volume, where `rampart report merge` joins them.
//!
//! Every scalar is written as a JSON string, which YAML reads as the same string: no value,
//! whatever it holds, can change the manifest's structure.

use std::fmt::Write as _;

/// What the manifest says.
#[derive(Debug, Clone)]
pub struct CronJob {
    pub name: String,
    pub image: String,
    /// Five crontab fields or an `@daily`-like word.
    pub schedule: String,
    pub shards: u32,
    pub parallelism: u32,
    /// Paths inside the container.
    pub inventory: String,
    pub playbook: String,
    pub known_hosts: String,
    /// The folder the shards write their reports into (a PersistentVolumeClaim).
    pub reports_dir: String,
}

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The CronJob manifest. Exit 2 (drift found) fails the pod's index without a retry (the
/// report is written); any other failure is retried once per index.
pub fn manifest(job: &CronJob) -> String {
    let report = format!(
        "{}/{}-shard-$(JOB_COMPLETION_INDEX).json",
        job.reports_dir.trim_end_matches('/'),
        job.name
    );
    let args = [
        "drift",
        "-q",
        "-i",
        &job.inventory,
        "--known-hosts",
        &job.known_hosts,
        "--output",
        &report,
        &job.playbook,
    ];
    let mut y = String::new();
    let _ = write!(
        y,
        "# rampart drift, sharded {shards} ways: merge the reports afterwards with\n\
         #   rampart report merge {dir}/{name}-shard-*.json -o fleet.prom\n\
         apiVersion: batch/v1\n\
         kind: CronJob\n\
         metadata:\n  name: {qname}\n  labels:\n    app.kubernetes.io/name: rampart\n\
         spec:\n  schedule: {schedule}\n  concurrencyPolicy: Forbid\n  jobTemplate:\n    spec:\n\
         \x20     completionMode: Indexed\n      completions: {shards}\n      parallelism: {par}\n\
         \x20     backoffLimitPerIndex: 1\n      podFailurePolicy:\n        rules:\n\
         \x20         - action: FailIndex\n            onExitCodes:\n\
         \x20             containerName: rampart\n              operator: In\n\
         \x20             values: [2]\n\
         \x20     template:\n        spec:\n          restartPolicy: Never\n\
         \x20         containers:\n            - name: rampart\n              image: {image}\n\
         \x20             args:\n",
        shards = job.shards,
        dir = job.reports_dir.trim_end_matches('/'),
        name = job.name,
        qname = q(&job.name),
        schedule = q(&job.schedule),
        par = job.parallelism,
        image = q(&job.image),
    );
    for a in args {
        let _ = writeln!(y, "                - {}", q(a));
    }
    let _ = write!(
        y,
        "              env:\n                - name: RAMPART_SHARDS\n                  value: {shards}\n\
         \x20               - name: JOB_COMPLETION_INDEX\n                  valueFrom:\n\
         \x20                   fieldRef:\n\
         \x20                     fieldPath: \"metadata.annotations['batch.kubernetes.io/job-completion-index']\"\n\
         \x20             volumeMounts:\n                - name: config\n\
         \x20                 mountPath: \"/etc/rampart\"\n                  readOnly: true\n\
         \x20               - name: ssh\n                  mountPath: \"/etc/rampart/ssh\"\n\
         \x20                 readOnly: true\n                - name: reports\n\
         \x20                 mountPath: {dir}\n\
         \x20         volumes:\n            - name: config\n              configMap:\n\
         \x20               name: {cm}\n            - name: ssh\n              secret:\n\
         \x20               secretName: {secret}\n                defaultMode: 256  # 0o400, the key for its owner only\n\
         \x20           - name: reports\n              persistentVolumeClaim:\n\
         \x20               claimName: {pvc}\n",
        shards = q(&job.shards.to_string()),
        dir = q(job.reports_dir.trim_end_matches('/')),
        cm = q(&format!("{}-config", job.name)),
        secret = q(&format!("{}-ssh", job.name)),
        pvc = q(&format!("{}-reports", job.name)),
    );
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> CronJob {
        CronJob {
            name: "rampart-drift".into(),
            image: "registry.example/rampart:0.1".into(),
            schedule: "0 3 * * *".into(),
            shards: 4,
            parallelism: 2,
            inventory: "/etc/rampart/inventory.yaml".into(),
            playbook: "/etc/rampart/site.yaml".into(),
            known_hosts: "/etc/rampart/known_hosts".into(),
            reports_dir: "/var/lib/rampart".into(),
        }
    }

    #[test]
    fn the_manifest_matches_the_golden_file() {
        let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/schedule/cronjob.yaml");
        let got = manifest(&job());
        if std::env::var_os("RAMPART_BLESS").is_some() {
            std::fs::write(&golden, &got).unwrap();
        }
        assert_eq!(got, std::fs::read_to_string(&golden).unwrap());
    }

    #[test]
    fn the_manifest_is_an_indexed_cronjob_in_well_formed_yaml() {
        let v: serde_json::Value = serde_saphyr::from_str(&manifest(&job())).unwrap();
        assert_eq!(v["apiVersion"], "batch/v1");
        assert_eq!(v["kind"], "CronJob");
        assert_eq!(v["spec"]["schedule"], "0 3 * * *");
        let spec = &v["spec"]["jobTemplate"]["spec"];
        assert_eq!(spec["completionMode"], "Indexed");
        assert_eq!(spec["completions"], 4);
        assert_eq!(spec["parallelism"], 2);
        assert_eq!(
            spec["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"][0],
            2
        );
        let c = &spec["template"]["spec"]["containers"][0];
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");
        assert_eq!(c["image"], "registry.example/rampart:0.1");
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[0], "drift");
        assert!(
            args.contains(&"/var/lib/rampart/rampart-drift-shard-$(JOB_COMPLETION_INDEX).json")
        );
        assert_eq!(args.last(), Some(&"/etc/rampart/site.yaml"));
        let env = c["env"].as_array().unwrap();
        assert_eq!(env[0]["name"], "RAMPART_SHARDS");
        assert_eq!(env[0]["value"], "4");
        assert_eq!(env[1]["name"], "JOB_COMPLETION_INDEX");
        assert_eq!(
            env[1]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
    }

    #[test]
    fn hostile_values_stay_scalars() {
        let mut j = job();
        j.image = "x\"\n  kind: Pod\n# ".into();
        j.playbook = "/p: {a: 1}\n- b".into();
        let v: serde_json::Value = serde_saphyr::from_str(&manifest(&j)).unwrap();
        assert_eq!(v["kind"], "CronJob");
        let c = &v["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], j.image.as_str());
        assert_eq!(
            c["args"].as_array().unwrap().last().unwrap(),
            j.playbook.as_str()
        );
    }
}
