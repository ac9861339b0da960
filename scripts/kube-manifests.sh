#!/usr/bin/env bash
# Offline checks of what ClaudeCluster gives a Kubernetes cluster: the
# manifests in deploy/kubernetes and the Pod, Secret and NetworkPolicy that
# `claudecluster kube render` prints are validated (strict: no unknown
# field) against current Kubernetes schemas with PyPI's kubernetes-validate,
# and the session Pod is checked against the restricted Pod Security
# Standard. The test cluster (1.20) cannot show either: it drops unknown
# fields and has no Pod Security Admission.
#
# Usage: scripts/kube-manifests.sh [path/to/claudecluster]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

bin="${1:-$TARGET_DIR/debug/claudecluster}"
venv=/var/tmp/cc-kube-validate
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    log "installing kubernetes-validate (PyPI) into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q kubernetes-validate
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log "rendering a session's objects (claudecluster kube render)"
"$bin" kube render --kube-seccomp localhost:claudecluster.json --kube-runtime-class gvisor \
    > "$work/render.json"
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
items = json.load(open(f"{work}/render.json"))["items"]
for i, item in enumerate(items):
    json.dump(item, open(f"{work}/object-{i}.json", "w"))
pod = next(i for i in items if i["kind"] == "Pod")
spec = pod["spec"]
problems = []
def need(cond, what):
    if not cond:
        problems.append(what)
# The restricted Pod Security Standard, control by control
# (https://kubernetes.io/docs/concepts/security/pod-security-standards/).
need(not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), "host namespaces")
allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}
for v in spec.get("volumes", []):
    kinds = set(v) - {"name"}
    need(kinds <= allowed_volumes, f"volume {v['name']} of type {kinds}")
pod_sc = spec.get("securityContext", {})
containers = spec["containers"] + spec.get("initContainers", [])
for c in containers:
    sc = c.get("securityContext", {})
    name = c["name"]
    need(not sc.get("privileged"), f"{name}: privileged")
    need(sc.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation must be false")
    need(sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, f"{name}: runAsNonRoot")
    need(sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, f"{name}: runAsUser 0")
    caps = sc.get("capabilities", {})
    need("ALL" in caps.get("drop", []), f"{name}: capabilities must drop ALL")
    need(set(caps.get("add", [])) <= {"NET_BIND_SERVICE"}, f"{name}: added capabilities")
    seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
    need(seccomp in ("RuntimeDefault", "Localhost"), f"{name}: seccomp profile {seccomp}")
    need(not any(p.get("hostPort") for p in c.get("ports", [])), f"{name}: host ports")
    need(sc.get("readOnlyRootFilesystem") is True, f"{name}: read-only root filesystem (ours, beyond the standard)")
need(spec.get("automountServiceAccountToken") is False, "a service-account token (ours, beyond the standard)")
if problems:
    sys.exit("the session Pod breaks the restricted Pod Security Standard: " + "; ".join(problems))
print("the session Pod meets the restricted Pod Security Standard", file=sys.stderr)
PY

log "validating deploy/kubernetes and the rendered objects against Kubernetes $("$venv/bin/pip" show kubernetes-validate | awk '/^Version/ {print $2}') schemas"
manifests=()
for f in deploy/kubernetes/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
"$venv/bin/kubernetes-validate" --strict --quiet "${manifests[@]}" "$work"/object-*.json
echo "kubernetes manifests: ${#manifests[@]} files and $(ls "$work"/object-*.json | wc -l) rendered objects valid" >&2
