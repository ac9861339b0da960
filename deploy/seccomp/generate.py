#!/usr/bin/env python3
"""Writes deploy/seccomp/claudecluster.json, the seccomp profile of every
session container (Docker's `--security-opt seccomp=…`, Kubernetes'
`seccompProfile: {type: Localhost}`).

An allowlist: every x86_64 system call this kernel's headers name, less the
ones a session has no business making. A call the list does not name (one
newer than the headers) fails with ENOSYS, so libc falls back as it does on
an older kernel; a refused call fails with EPERM.

    python3 deploy/seccomp/generate.py /usr/include/x86_64-linux-gnu/asm/unistd_64.h
"""
import json
import re
import sys
from pathlib import Path

EPERM = 1
ENOSYS = 38

# Refused, each for a reason (grouped). Docker's default profile refuses most
# of these to containers without capabilities too; ptrace, the cross-process
# memory calls, io_uring and the new mount API are refused here as well.
REFUSED = {
    # Reading or steering another process: ptrace and its relatives.
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise",
    "kcmp", "pidfd_getfd",
    # Kernel keyrings, eBPF, perf, userfaultfd: large kernel attack surface.
    "add_key", "request_key", "keyctl", "bpf", "perf_event_open",
    "userfaultfd",
    # io_uring: a second system-call interface seccomp cannot see into.
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # Namespaces and mounts (user namespaces are how unprivileged code gains
    # capabilities inside one); clone with namespace flags is refused below.
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
    "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
    "mount_setattr", "name_to_handle_at", "open_by_handle_at",
    # The machine itself: modules, reboot, clocks, swap, accounting, quotas.
    "init_module", "finit_module", "delete_module", "create_module",
    "query_module", "get_kernel_syms", "kexec_load", "kexec_file_load",
    "reboot", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog",
    "sethostname", "setdomainname", "vhangup", "iopl", "ioperm",
    "lookup_dcookie", "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl",
    "fanotify_init",
    # NUMA placement: needs CAP_SYS_NICE for others' memory.
    "mbind", "set_mempolicy", "get_mempolicy", "move_pages",
    "migrate_pages", "set_mempolicy_home_node",
}

# clone(2) with any namespace flag: CLONE_NEWNS | CLONE_NEWCGROUP |
# CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET.
CLONE_NAMESPACES = 0x7E020000


def main(header: str) -> None:
    names = sorted(set(re.findall(r"#define __NR_(\w+) \d+", Path(header).read_text())))
    allowed = [n for n in names if n not in REFUSED and n not in ("clone", "clone3")]
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": ENOSYS,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []}],
        "syscalls": [
            {"names": allowed, "action": "SCMP_ACT_ALLOW"},
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": CLONE_NAMESPACES, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
                "comment": "clone without namespace flags",
            },
            {
                "names": ["clone3"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": ENOSYS,
                "comment": "its flags are behind a pointer seccomp cannot read; libc falls back to clone",
            },
            {"names": sorted(REFUSED & set(names)), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
        ],
    }
    out = Path(__file__).with_name("claudecluster.json")
    out.write_text(json.dumps(profile, indent=1) + "\n")
    print(f"{out}: {len(allowed)} calls allowed, {len(REFUSED & set(names))} refused")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
