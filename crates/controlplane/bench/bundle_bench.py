#!/usr/bin/env python3
"""Apply-a-bundle benchmark (issue 15): wall time of `kubectl apply -f` for a 500-object bundle
of the kinds added in wave 2 (RBAC, PDB, NetworkPolicy, Ingress, StatefulSet, CronJob, HPA,
PriorityClass, StorageClass, ...) against the same count of the kinds served before
(ConfigMap, Secret, ServiceAccount, Service, Deployment), each on a fresh control plane, and
the control plane's RSS after each.

    cargo build --release -p rktup-controlplane --example serve
    python3 crates/controlplane/bench/bundle_bench.py [ROUNDS]

Needs /usr/bin/kubectl. Prints one line per round and bundle.
"""
import json, os, subprocess, sys, tempfile, time

SERVE = os.environ.get("SERVE", "target/release/examples/serve")
N = 500


def old_kinds(i):
    k = i % 5
    n = f"b{i}"
    if k == 0:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n}, "data": {"a": "b"}}
    if k == 1:
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": n}, "stringData": {"a": "b"}}
    if k == 2:
        return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": n}}
    if k == 3:
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": n},
                "spec": {"selector": {"app": n}, "ports": [{"port": 80}]}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": n},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": n}},
                     "template": {"metadata": {"labels": {"app": n}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


def new_kinds(i):
    k = i % 10
    n = f"b{i}"
    sel = {"matchLabels": {"app": n}}
    tmpl = {"metadata": {"labels": {"app": n}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": n},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": n},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": n},
         "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": f"bench:{n}"},
         "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": n},
         "spec": {"minAvailable": 1, "selector": sel}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": n},
         "spec": {"podSelector": sel, "policyTypes": ["Ingress"]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": n},
         "spec": {"rules": [{"host": f"{n}.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                  "backend": {"service": {"name": n, "port": {"number": 80}}}}]}}]}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": n},
         "spec": {"replicas": 0, "serviceName": n, "selector": sel, "template": tmpl}},
        {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": n},
         "spec": {"schedule": "*/5 * * * *", "suspend": True, "jobTemplate": {"spec": {"template": {
             "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": n},
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": n},
                  "minReplicas": 1, "maxReplicas": 3}},
        {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": f"bench-{n}"},
         "value": 1000 + i},
    ][k]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run(gen):
    d = tempfile.mkdtemp(prefix="bundle-bench-")
    port = 17000 + os.getpid() % 1000
    p = subprocess.Popen([SERVE, "--data-dir", d, "--secure-port", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kc = os.path.join(d, "admin.kubeconfig")
    env = dict(os.environ, KUBECONFIG=kc, HOME=d)
    for _ in range(100):
        if os.path.exists(kc) and subprocess.run(["kubectl", "get", "--raw", "/readyz"], env=env,
                                                 capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    bundle = os.path.join(d, "bundle.yaml")
    with open(bundle, "w") as f:
        for i in range(N):
            f.write("---\n" + json.dumps(gen(i)) + "\n")
    # Discovery and OpenAPI warm in kubectl's cache first, as for a user's second apply.
    subprocess.run(["kubectl", "api-resources"], env=env, capture_output=True)
    t = time.monotonic()
    out = subprocess.run(["kubectl", "apply", "-f", bundle], env=env, capture_output=True, text=True)
    wall = time.monotonic() - t
    ok = out.returncode == 0 and out.stdout.count("created") == N
    time.sleep(1)
    rss = rss_kib(p.pid)
    p.terminate()
    p.wait()
    subprocess.run(["rm", "-rf", d])
    return wall, rss, ok


rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
for r in range(rounds):
    for label, gen in (("served before (5 kinds)", old_kinds), ("added in wave 2 (10 kinds)", new_kinds)):
        wall, rss, ok = run(gen)
        print(f"round {r + 1}: {N} objects, {label}: apply {wall:.2f} s, RSS after {rss / 1024:.1f} MiB, all created: {ok}")
