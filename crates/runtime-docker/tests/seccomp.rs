//! The session containers' seccomp profile, as shipped: what it refuses
//! and how (no Docker needed; the end-to-end isolation test makes the calls
//! from inside a session).

use cc_runtime_docker::SECCOMP_PROFILE;
use serde_json::Value;
use std::collections::BTreeSet;

fn names_with(profile: &Value, pred: impl Fn(&Value) -> bool) -> BTreeSet<String> {
    profile["syscalls"]
        .as_array()
        .expect("syscalls")
        .iter()
        .filter(|r| pred(r))
        .flat_map(|r| r["names"].as_array().expect("names").iter())
        .map(|n| n.as_str().expect("a name").to_owned())
        .collect()
}

#[test]
fn the_profile_allows_a_list_and_refuses_the_rest() {
    let p: Value = serde_json::from_str(SECCOMP_PROFILE).expect("the profile is JSON");
    // Not on the list: ENOSYS, so libc falls back as on an older kernel.
    assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(p["defaultErrnoRet"], 38);
    let allowed = names_with(&p, |r| {
        r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none()
    });
    let refused = names_with(&p, |r| {
        r["action"] == "SCMP_ACT_ERRNO" && r["errnoRet"] == 1
    });
    for call in [
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "keyctl",
        "add_key",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "unshare",
        "setns",
        "mount",
        "pivot_root",
        "kexec_load",
        "init_module",
    ] {
        assert!(refused.contains(call), "{call} is not refused");
        assert!(!allowed.contains(call), "{call} is allowed too");
    }
    // What every session needs.
    for call in [
        "read", "write", "openat", "execve", "mmap", "futex", "socket", "connect", "wait4",
    ] {
        assert!(allowed.contains(call), "{call} is not allowed");
    }
    // clone only without namespace flags; clone3 (flags behind a pointer) is
    // ENOSYS so libc uses clone.
    let clone = p["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["names"] == serde_json::json!(["clone"]))
        .expect("a clone rule");
    assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
    assert_eq!(clone["args"][0]["value"], 0x7E02_0000);
    assert_eq!(clone["args"][0]["valueTwo"], 0);
    assert!(names_with(&p, |r| r["errnoRet"] == 38).contains("clone3"));
}
