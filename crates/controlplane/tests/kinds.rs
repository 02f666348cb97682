//! Every kind served beyond the first eighteen, driven through the real kubectl as a user
//! would: create (`apply`), list with upstream's printed columns, get as YAML, patch
//! (`label`), change and re-apply (`configured`), delete. The columns are kube-apiserver
//! v1.33's (pkg/printers/internalversion); kinds it prints with the default handler show
//! NAME and CREATED AT.

use rktup_testkit::controlplane::*;

/// (resource for kubectl, namespaced, the object's YAML, the expected header row).
const KINDS: &[(&str, bool, &str, &str)] = &[
    ("podtemplates", true, "apiVersion: v1\nkind: PodTemplate\nmetadata: {name: k-pt}\ntemplate:\n  metadata: {labels: {app: k}}\n  spec: {containers: [{name: c, image: busybox}]}\n", "NAME CONTAINERS IMAGES POD LABELS"),
    ("replicationcontrollers", true, "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: k-rc}\nspec:\n  replicas: 0\n  selector: {app: k-rc}\n  template:\n    metadata: {labels: {app: k-rc}}\n    spec: {containers: [{name: c, image: busybox}]}\n", "NAME DESIRED CURRENT READY AGE"),
    ("limitranges", true, "apiVersion: v1\nkind: LimitRange\nmetadata: {name: k-lr}\nspec:\n  limits: [{type: Container, default: {cpu: 200m}}]\n", "NAME CREATED AT"),
    ("resourcequotas", true, "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: k-quota}\nspec: {hard: {configmaps: \"100\"}}\n", "NAME REQUEST LIMIT AGE"),
    ("persistentvolumes", false, "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: k-pv}\nspec:\n  capacity: {storage: 1Gi}\n  accessModes: [ReadWriteOnce]\n  storageClassName: k-manual\n  hostPath: {path: /tmp/k-pv}\n", "NAME CAPACITY ACCESS MODES RECLAIM POLICY STATUS CLAIM STORAGECLASS VOLUMEATTRIBUTESCLASS REASON AGE"),
    ("persistentvolumeclaims", true, "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: k-pvc}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: k-none\n  resources: {requests: {storage: 1Gi}}\n", "NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS VOLUMEATTRIBUTESCLASS AGE"),
    ("statefulsets.apps", true, "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: k-sts}\nspec:\n  replicas: 0\n  serviceName: k-sts\n  selector: {matchLabels: {app: k-sts}}\n  template:\n    metadata: {labels: {app: k-sts}}\n    spec: {containers: [{name: c, image: busybox}]}\n", "NAME READY AGE"),
    ("horizontalpodautoscalers.autoscaling", true, "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: k-hpa}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 1\n  maxReplicas: 3\n  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}}]\n", "NAME REFERENCE TARGETS MINPODS MAXPODS REPLICAS AGE"),
    ("cronjobs.batch", true, "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: k-cj}\nspec:\n  schedule: \"*/5 * * * *\"\n  suspend: true\n  jobTemplate:\n    spec:\n      template:\n        spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}\n", "NAME SCHEDULE TIMEZONE SUSPEND ACTIVE LAST SCHEDULE AGE"),
    ("ingressclasses.networking.k8s.io", false, "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: k-ic}\nspec: {controller: example.com/ingress}\n", "NAME CONTROLLER PARAMETERS AGE"),
    ("ingresses.networking.k8s.io", true, "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: k-ing}\nspec:\n  ingressClassName: k-ic\n  rules:\n  - host: k.example.com\n    http:\n      paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]\n", "NAME CLASS HOSTS ADDRESS PORTS AGE"),
    ("networkpolicies.networking.k8s.io", true, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: k-np}\nspec:\n  podSelector: {matchLabels: {app: k}}\n  policyTypes: [Ingress]\n", "NAME POD-SELECTOR AGE"),
    ("servicecidrs.networking.k8s.io", false, "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: k-cidr}\nspec: {cidrs: [10.200.0.0/24]}\n", "NAME CIDRS AGE"),
    ("poddisruptionbudgets.policy", true, "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: k-pdb}\nspec:\n  minAvailable: 1\n  selector: {matchLabels: {app: k}}\n", "NAME MIN AVAILABLE MAX UNAVAILABLE ALLOWED DISRUPTIONS AGE"),
    ("roles.rbac.authorization.k8s.io", true, "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: k-role}\nrules: [{apiGroups: [\"\"], resources: [pods], verbs: [get, list]}]\n", "NAME CREATED AT"),
    ("rolebindings.rbac.authorization.k8s.io", true, "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: k-rb}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: k-role}\nsubjects: [{kind: ServiceAccount, name: default, namespace: default}]\n", "NAME ROLE AGE"),
    ("clusterroles.rbac.authorization.k8s.io", false, "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: \"k:cr\"}\nrules: [{apiGroups: [\"\"], resources: [nodes], verbs: [get]}]\n", "NAME CREATED AT"),
    ("clusterrolebindings.rbac.authorization.k8s.io", false, "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: \"k:crb\"}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: \"k:cr\"}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: k-group}]\n", "NAME ROLE AGE"),
    ("storageclasses.storage.k8s.io", false, "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: k-sc}\nprovisioner: example.com/k\n", "NAME PROVISIONER RECLAIMPOLICY VOLUMEBINDINGMODE ALLOWVOLUMEEXPANSION AGE"),
    ("csidrivers.storage.k8s.io", false, "apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: {name: k.csi.example.com}\nspec: {attachRequired: false}\n", "NAME ATTACHREQUIRED PODINFOONMOUNT STORAGECAPACITY TOKENREQUESTS REQUIRESREPUBLISH MODES AGE"),
    ("csistoragecapacities.storage.k8s.io", true, "apiVersion: storage.k8s.io/v1\nkind: CSIStorageCapacity\nmetadata: {name: k-cap}\nstorageClassName: k-sc\ncapacity: 10Gi\n", "NAME STORAGECLASSNAME CAPACITY"),
    ("volumeattachments.storage.k8s.io", false, "apiVersion: storage.k8s.io/v1\nkind: VolumeAttachment\nmetadata: {name: k-va}\nspec: {attacher: k.csi.example.com, nodeName: n1, source: {persistentVolumeName: k-pv}}\n", "NAME ATTACHER PV NODE ATTACHED AGE"),
    ("priorityclasses.scheduling.k8s.io", false, "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: k-pc}\nvalue: 1000\n", "NAME VALUE GLOBAL-DEFAULT AGE PREEMPTIONPOLICY"),
    ("runtimeclasses.node.k8s.io", false, "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: k-rtc}\nhandler: runc\n", "NAME HANDLER AGE"),
    ("validatingwebhookconfigurations.admissionregistration.k8s.io", false, "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {name: k-vwc}\nwebhooks: []\n", "NAME WEBHOOKS AGE"),
    ("mutatingwebhookconfigurations.admissionregistration.k8s.io", false, "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {name: k-mwc}\nwebhooks: []\n", "NAME WEBHOOKS AGE"),
    ("flowschemas.flowcontrol.apiserver.k8s.io", false, "apiVersion: flowcontrol.apiserver.k8s.io/v1\nkind: FlowSchema\nmetadata: {name: k-fs}\nspec:\n  priorityLevelConfiguration: {name: k-plc}\n  matchingPrecedence: 1000\n  rules: []\n", "NAME PRIORITYLEVEL MATCHINGPRECEDENCE DISTINGUISHERMETHOD AGE MISSINGPL"),
    ("prioritylevelconfigurations.flowcontrol.apiserver.k8s.io", false, "apiVersion: flowcontrol.apiserver.k8s.io/v1\nkind: PriorityLevelConfiguration\nmetadata: {name: k-plc}\nspec:\n  type: Limited\n  limited: {nominalConcurrencyShares: 5, limitResponse: {type: Reject}}\n", "NAME TYPE NOMINALCONCURRENCYSHARES QUEUES HANDSIZE QUEUELENGTHLIMIT AGE"),
    ("customresourcedefinitions.apiextensions.k8s.io", false, "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.k.example.com}\nspec:\n  group: k.example.com\n  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}\n  scope: Namespaced\n  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]\n", "NAME CREATED AT"),
    ("apiservices.apiregistration.k8s.io", false, "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {name: v1.k.example.com}\nspec: {group: k.example.com, version: v1, groupPriorityMinimum: 1000, versionPriority: 15, service: {namespace: default, name: k-svc}}\n", "NAME SERVICE AVAILABLE AGE"),
];

fn words(header: &str) -> String {
    header.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn every_new_kind_through_kubectl() {
    let c = start().await;
    // A `kubectl get -w` per kind, open before anything is created: each must see its object
    // added, modified and deleted.
    let watches: Vec<std::process::Child> = KINDS
        .iter()
        .map(|(resource, ..)| watch(&c, resource))
        .collect();
    // Every watch is established before the first create (kubectl prints nothing until then).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    for (resource, namespaced, yaml, header) in KINDS {
        let out = c.apply_stdin(&["apply", "-f", "-"], yaml).await;
        assert!(out.contains("created"), "{resource}: {out}");
        let name = sample_name(yaml);
        // `kubectl get <resource>` prints upstream's columns (the header row).
        let table = c.ok(&["get", resource, name]).await;
        let first = table.lines().next().unwrap_or_default();
        assert_eq!(words(first), *header, "{resource} columns:\n{table}");
        assert!(table.contains(name), "{resource}: {table}");
        // Listed across namespaces (or cluster-wide) and readable as YAML.
        let all = c.ok(&["get", resource, "-A", "-o", "name"]).await;
        assert!(all.contains(name), "{resource} list: {all}");
        let got = c.ok(&["get", resource, name, "-o", "yaml"]).await;
        assert!(got.contains("resourceVersion:"), "{resource}: {got}");
        if *namespaced {
            assert!(got.contains("namespace: default"), "{resource}: {got}");
        }
        // Patched (kubectl label: a strategic merge patch) and re-applied with a change.
        c.ok(&["label", resource, name, "k-test=patched"]).await;
        let labelled = c
            .ok(&[
                "get",
                resource,
                name,
                "-o",
                "jsonpath={.metadata.labels.k-test}",
            ])
            .await;
        assert_eq!(labelled, "patched", "{resource}");
        let changed = yaml.replacen(
            "metadata: {name: ",
            "metadata: {annotations: {k: v}, name: ",
            1,
        );
        let out = c.apply_stdin(&["apply", "-f", "-"], &changed).await;
        assert!(out.contains("configured"), "{resource}: {out}");
        let annotated = c
            .ok(&[
                "get",
                resource,
                name,
                "-o",
                "jsonpath={.metadata.annotations.k}",
            ])
            .await;
        assert_eq!(annotated, "v", "{resource}");
        // A server-side apply by another manager of the same object (same values) is shared.
        let out = c
            .apply_stdin(
                &[
                    "apply",
                    "--server-side",
                    "--field-manager=k-other",
                    "-f",
                    "-",
                ],
                &changed,
            )
            .await;
        assert!(out.contains("serverside-applied"), "{resource}: {out}");
        let out = c.ok(&["delete", resource, name, "--wait=false"]).await;
        assert!(out.contains("deleted"), "{resource}: {out}");
    }
    for ((resource, _, yaml, _), mut child) in KINDS.iter().zip(watches) {
        let name = sample_name(yaml);
        let log = watch_log(&c, resource);
        let seen = eventually(
            &format!("kubectl get {resource} -w to see {name} deleted"),
            std::time::Duration::from_secs(20),
            || {
                let out = std::fs::read_to_string(&log).unwrap_or_default();
                let done = out.lines().any(|l| l == format!("DELETED {name}"));
                async move { done.then_some(out) }
            },
        )
        .await;
        let _ = child.kill();
        let _ = child.wait();
        for event in ["ADDED", "MODIFIED", "DELETED"] {
            assert!(
                seen.lines().any(|l| l == format!("{event} {name}")),
                "{resource}: no {event} event for {name} in\n{seen}"
            );
        }
    }
    c.handle.shutdown().await;
}

/// The `metadata: {name: …}` of a sample.
fn sample_name(yaml: &str) -> &str {
    yaml.lines()
        .find_map(|l| l.strip_prefix("metadata: {name: "))
        .map(|n| n.trim_end_matches('}').trim_matches('"'))
        .expect("sample has a name")
}

fn watch_log(c: &Cluster, resource: &str) -> std::path::PathBuf {
    c.dir.path().join(format!("watch-{resource}.log"))
}

/// `kubectl get RESOURCE -A --watch-only --output-watch-events` printing `TYPE name` lines
/// into a file.
fn watch(c: &Cluster, resource: &str) -> std::process::Child {
    let log = std::fs::File::create(watch_log(c, resource)).expect("watch log");
    let home = c.dir.path().join("home-watch");
    std::process::Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(c.handle.admin_kubeconfig())
        .args([
            "get",
            resource,
            "-A",
            "--watch-only",
            "--output-watch-events",
            "-o",
            "jsonpath={.type} {.object.metadata.name}{\"\\n\"}",
        ])
        .env("HOME", &home)
        .env("KUBECACHEDIR", home.join("cache"))
        .stdout(log)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl get -w runs")
}

/// Validation of the networking and node kinds with kube-apiserver's 422 texts, and their
/// defaults (NetworkPolicy policyTypes and port protocol).
#[tokio::test]
async fn networking_kinds_are_validated_and_defaulted() {
    let c = start().await;
    let refused = |yaml: &'static str| {
        let c = &c;
        async move {
            let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(yaml)).await;
            assert!(!out.status.success(), "accepted: {yaml}");
            String::from_utf8_lossy(&out.stderr).into_owned()
        }
    };
    let err = refused("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: bad}\nspec:\n  rules:\n  - host: k.example.com\n    http:\n      paths: [{path: /, backend: {service: {name: web, port: {number: 80}}}}]\n").await;
    assert!(
        err.contains(
            "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"
        ),
        "{err}"
    );
    let err = refused("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: bad}\nspec:\n  rules:\n  - http:\n      paths: [{path: x, pathType: Prefix, backend: {service: {name: web, port: {number: 80, name: http}}}}]\n").await;
    assert!(
        err.contains(
            "spec.rules[0].http.paths[0].path: Invalid value: \"x\": must be an absolute path"
        ),
        "{err}"
    );
    assert!(
        err.contains("cannot set both port name & port number"),
        "{err}"
    );
    let err = refused("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad}\nspec:\n  podSelector: {}\n  policyTypes: [Sideways]\n").await;
    assert!(
        err.contains("spec.policyTypes[0]: Unsupported value: \"Sideways\": supported values: \"Egress\", \"Ingress\""),
        "{err}"
    );
    c.apply_stdin(
        &["apply", "-f", "-"],
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  podSelector: {}\n  egress: [{ports: [{port: 53}]}]\n",
    )
    .await;
    let types = c
        .ok(&[
            "get",
            "netpol",
            "np",
            "-o",
            "jsonpath={.spec.policyTypes} {.spec.egress[0].ports[0].protocol}",
        ])
        .await;
    assert_eq!(types, r#"["Ingress","Egress"] TCP"#);
    c.apply_stdin(
        &["apply", "-f", "-"],
        "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: rc}\nhandler: runc\n",
    )
    .await;
    let out = c
        .kubectl(&[
            "patch",
            "runtimeclass",
            "rc",
            "--type=merge",
            "-p",
            r#"{"handler":"kata"}"#,
        ])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("handler: Invalid value: \"kata\": field is immutable"),
        "{err}"
    );
    c.handle.shutdown().await;
}

/// kube-controller-manager's controller roles exist as upstream's bootstrap policy makes them
/// (`system:controller:<name>` bound to kube-system's ServiceAccount `<name>`), and grant what
/// they say.
#[tokio::test]
async fn controller_roles_of_the_bootstrap_policy() {
    let c = start().await;
    let roles = c
        .ok(&[
            "get",
            "clusterroles",
            "-o",
            "name",
            "-l",
            "kubernetes.io/bootstrapping=rbac-defaults",
        ])
        .await;
    for r in [
        "job-controller",
        "statefulset-controller",
        "generic-garbage-collector",
        "namespace-controller",
    ] {
        assert!(
            roles.contains(&format!(
                "clusterrole.rbac.authorization.k8s.io/system:controller:{r}"
            )),
            "{r} missing:\n{roles}"
        );
    }
    let binding = c
        .ok(&["get", "clusterrolebinding", "system:controller:job-controller", "-o", "jsonpath={.roleRef.name} {.subjects[0].kind}/{.subjects[0].namespace}/{.subjects[0].name}"])
        .await;
    assert_eq!(
        binding,
        "system:controller:job-controller ServiceAccount/kube-system/job-controller"
    );
    let sa = "--as=system:serviceaccount:kube-system:job-controller";
    let yes = c.kubectl(&["auth", "can-i", "create", "pods", sa]).await;
    assert_eq!(String::from_utf8_lossy(&yes.stdout).trim(), "yes");
    let no = c.kubectl(&["auth", "can-i", "create", "secrets", sa]).await;
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
    c.handle.shutdown().await;
}
