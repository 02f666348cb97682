//! kubectl columns of the kinds served beyond the first eighteen, as kube-apiserver's printers
//! (pkg/printers/internalversion) define and fill them in v1.33. Kinds upstream prints with the
//! default handler (Role, ClusterRole, LimitRange, CRDs) are not here: they get `Name`,
//! `Created At` from `table.rs`.

use super::table::{age, col, containers_images, i, map_selector, or_none, s, selector_string};
use crate::registry::ResourceDef;
use serde_json::{json, Value};

const AGE: &str =
    "CreationTimestamp is a timestamp representing the server time when this object was created.";
const NAME: &str = "Name must be unique within a namespace.";

/// Column definitions for `rd`, if it has its own printer here.
pub fn columns(rd: &ResourceDef) -> Option<Vec<Value>> {
    let name = || col("Name", "string", "name", 0, NAME);
    let age = || col("Age", "string", "", 0, AGE);
    let c = |n: &str, p: i32, d: &str| col(n, "string", "", p, d);
    let int = |n: &str, d: &str| col(n, "integer", "", 0, d);
    let boolean = |n: &str, d: &str| col(n, "boolean", "", 0, d);
    let containers = || c("Containers", 1, "Names of each container in the template.");
    let images = || {
        c(
            "Images",
            1,
            "Images referenced by each container in the template.",
        )
    };
    Some(match (rd.group, rd.kind) {
        ("", "PodTemplate") => vec![name(), c("Containers", 0, "Names of each container in the template."), c("Images", 0, "Images referenced by each container in the template."), c("Pod Labels", 0, "The labels for the pod template.")],
        ("policy", "PodDisruptionBudget") => vec![name(), c("Min Available", 0, "The minimum number of pods that must be available."), c("Max Unavailable", 0, "The maximum number of pods that may be unavailable."), int("Allowed Disruptions", "Calculated number of pods that may be disrupted at this time."), age()],
        ("", "ReplicationController") => vec![name(), int("Desired", "Replicas is the number of desired replicas."), int("Current", "Replicas is the most recently observed number of replicas."), int("Ready", "The number of ready replicas for this replication controller."), age(), containers(), images(), c("Selector", 1, "Selector is a label query over pods that should match the Replicas count.")],
        ("batch", "CronJob") => vec![name(), c("Schedule", 0, "The schedule in Cron format."), c("Timezone", 0, "The time zone name for the given schedule."), boolean("Suspend", "This flag tells the controller to suspend subsequent executions."), int("Active", "A list of pointers to currently running jobs."), c("Last Schedule", 0, "Information when was the last time the job was successfully scheduled."), age(), containers(), images(), c("Selector", 1, "A label query over pods that should match the pod count.")],
        ("networking.k8s.io", "Ingress") => vec![name(), c("Class", 0, "The name of the IngressClass resource that should be used for additional configuration"), c("Hosts", 0, "Hosts that incoming requests are matched against before the ingress rule"), c("Address", 0, "Address is a list containing ingress points for the load-balancer"), c("Ports", 0, "Ports of TLS configurations that open"), age()],
        ("networking.k8s.io", "IngressClass") => vec![name(), c("Controller", 0, "Controller that is responsible for handling this class"), c("Parameters", 0, "A reference to a resource with additional parameters"), age()],
        ("apps", "StatefulSet") => vec![name(), c("Ready", 0, "Number of the pod with ready state"), age(), containers(), images()],
        ("", "PersistentVolume") => vec![name(), c("Capacity", 0, "capacity is the description of the persistent volume's resources and capacity."), c("Access Modes", 0, "accessModes contains all ways the volume can be mounted."), c("Reclaim Policy", 0, "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."), c("Status", 0, "phase indicates if a volume is available, bound to a claim, or released by a claim."), c("Claim", 0, "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."), c("StorageClass", 0, "StorageClass of the pv"), c("VolumeAttributesClass", 0, "VolumeAttributesClass of the pv"), c("Reason", 0, "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI."), age(), c("VolumeMode", 1, "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.")],
        ("", "PersistentVolumeClaim") => vec![name(), c("Status", 0, "phase represents the current phase of PersistentVolumeClaim."), c("Volume", 0, "volumeName is the binding reference to the PersistentVolume backing this claim."), c("Capacity", 0, "capacity represents the actual resources of the underlying volume."), c("Access Modes", 0, "accessModes contains the actual access modes the volume backing the PVC has."), c("StorageClass", 0, "StorageClass of the pvc"), c("VolumeAttributesClass", 0, "VolumeAttributesClass of the pvc"), age(), c("VolumeMode", 1, "volumeMode defines what type of volume is required by the claim.")],
        ("autoscaling", "HorizontalPodAutoscaler") => vec![name(), c("Reference", 0, "scaleTargetRef points to the target resource to scale"), c("Targets", 0, "metrics contains the specifications for which to use to calculate the desired replica count"), c("MinPods", 0, "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down."), c("MaxPods", 0, "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up."), c("Replicas", 0, "currentReplicas is current number of replicas of pods managed by this autoscaler"), age()],
        ("networking.k8s.io", "NetworkPolicy") => vec![name(), c("Pod-Selector", 0, "podSelector selects the pods to which this NetworkPolicy object applies."), age()],
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            let what = if rd.kind == "RoleBinding" { "roleBinding" } else { "clusterRoleBinding" };
            vec![name(), c("Role", 0, "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace."), age(), c("Users", 1, &format!("Users in the {what}")), c("Groups", 1, &format!("Groups in the {what}")), c("ServiceAccounts", 1, &format!("ServiceAccounts in the {what}"))]
        }
        ("certificates.k8s.io", "CertificateSigningRequest") => vec![name(), age(), c("SignerName", 0, "signerName indicates the requested signer, and is a qualified name."), c("Requestor", 0, "username contains the name of the user that created the CertificateSigningRequest."), c("RequestedDuration", 0, "expirationSeconds is the requested duration of validity of the issued certificate."), c("Condition", 0, "conditions applied to the request.")],
        ("storage.k8s.io", "StorageClass") => vec![name(), c("Provisioner", 0, "provisioner indicates the type of the provisioner."), c("ReclaimPolicy", 0, "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class."), c("VolumeBindingMode", 0, "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound."), c("AllowVolumeExpansion", 0, "allowVolumeExpansion shows whether the storage class allow volume expand."), age()],
        ("", "ResourceQuota") => vec![name(), c("Request", 0, "Request represents a minimum amount of cpu/memory that a container may consume."), c("Limit", 0, "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."), age()],
        ("scheduling.k8s.io", "PriorityClass") => vec![name(), int("Value", "value represents the integer value of this priority class."), boolean("Global-Default", "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class."), age(), c("PreemptionPolicy", 0, "preemptionPolicy is the Policy for preempting pods with lower priority.")],
        ("node.k8s.io", "RuntimeClass") => vec![name(), c("Handler", 0, "handler specifies the underlying runtime and configuration that the CRI implementation will use to handle pods of this class."), age()],
        ("storage.k8s.io", "VolumeAttachment") => vec![name(), col("Attacher", "string", "name", 0, "attacher indicates the name of the volume driver that MUST handle this request."), c("PV", 0, "persistentVolumeName represents the name of the persistent volume to attach."), c("Node", 0, "nodeName represents the node that the volume should be attached to."), boolean("Attached", "attached indicates the volume is successfully attached."), age()],
        ("storage.k8s.io", "CSINode") => vec![name(), int("Drivers", "Drivers indicates the number of CSI drivers registered on the node"), age()],
        ("storage.k8s.io", "CSIDriver") => vec![name(), boolean("AttachRequired", "attachRequired indicates this CSI volume driver requires an attach operation."), boolean("PodInfoOnMount", "podInfoOnMount indicates this CSI volume driver requires additional pod information during mount operations."), boolean("StorageCapacity", "storageCapacity indicates that the CSI volume driver wants pod scheduling to consider the storage capacity."), c("TokenRequests", 0, "tokenRequests indicates the CSI driver needs pods' service account tokens."), boolean("RequiresRepublish", "requiresRepublish indicates the CSI driver wants NodePublishVolume being periodically called."), c("Modes", 0, "volumeLifecycleModes defines what kind of volumes this CSI volume driver supports."), age()],
        ("storage.k8s.io", "CSIStorageCapacity") => vec![name(), c("StorageClassName", 0, "storageClassName represents the name of the StorageClass that the reported capacity applies to."), c("Capacity", 0, "capacity is the value reported by the CSI driver in its GetCapacityResponse for a GetCapacityRequest with topology and parameters that match the previous fields.")],
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration") => vec![name(), int("Webhooks", "Webhooks indicates the number of webhooks registered in this configuration"), age()],
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => vec![name(), int("Validations", "Validations indicates the number of validation rules defined in this configuration"), c("ParamKind", 0, "ParamKind specifies the kind of resources used to parameterize this policy"), age()],
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => vec![name(), c("PolicyName", 0, "PolicyName indicates the policy definition which the policy binding binded to"), c("ParamRef", 0, "ParamRef indicates the param resource which sets the configration param"), age()],
        ("flowcontrol.apiserver.k8s.io", "FlowSchema") => vec![name(), c("PriorityLevel", 0, "`name` is the name of the priority level configuration being referenced"), c("MatchingPrecedence", 0, "`matchingPrecedence` is used to choose among the FlowSchemas that match a given request."), c("DistinguisherMethod", 0, "`distinguisherMethod` defines how to compute the flow distinguisher for requests that match this schema."), age(), c("MissingPL", 0, "references a broken or non-existent PriorityLevelConfiguration")],
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration") => vec![name(), c("Type", 0, "`type` indicates whether this priority level is subject to limitation on request execution."), c("NominalConcurrencyShares", 0, "`nominalConcurrencyShares` (NCS) contributes to the computation of the NominalConcurrencyLimit (NominalCL) of this level."), c("Queues", 0, "`queues` is the number of queues for this priority level."), c("HandSize", 0, "`handSize` is a small positive number that configures the shuffle sharding of requests into queues."), c("QueueLengthLimit", 0, "`queueLengthLimit` is the maximum number of requests allowed to be waiting in a given queue of this priority level at a time"), age()],
        ("networking.k8s.io", "ServiceCIDR") => vec![name(), c("CIDRs", 0, "CIDRs defines the IP blocks in CIDR notation from which to assign service cluster IPs."), age()],
        ("networking.k8s.io", "IPAddress") => vec![name(), c("ParentRef", 0, "ParentRef references the resource that an IPAddress is attached to.")],
        ("apiregistration.k8s.io", "APIService") => vec![name(), c("Service", 0, "The reference to the service that hosts this API endpoint."), c("Available", 0, "Whether this service is available."), age()],
        _ => return None,
    })
}

/// `<unset>` for an absent boolean, else `True`/`False` (printBoolPtr).
fn bool_ptr(o: &Value, ptr: &str) -> String {
    match o.pointer(ptr).and_then(Value::as_bool) {
        None => "<unset>".into(),
        Some(true) => "True".into(),
        Some(false) => "False".into(),
    }
}

/// An int-or-string as Go's IntOrString.String() writes it.
fn int_or_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// `RWO,ROX,RWX,RWOP` of an accessModes list.
fn access_modes(o: &Value, ptr: &str) -> String {
    let modes: Vec<&str> = o
        .pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let short = |m: &str| match m {
        "ReadWriteOnce" => "RWO",
        "ReadOnlyMany" => "ROX",
        "ReadWriteMany" => "RWX",
        "ReadWriteOncePod" => "RWOP",
        _ => "",
    };
    let mut out = Vec::new();
    for m in [
        "ReadWriteOnce",
        "ReadOnlyMany",
        "ReadWriteMany",
        "ReadWriteOncePod",
    ] {
        if modes.contains(&m) {
            out.push(short(m));
        }
    }
    out.join(",")
}

fn phase_or_terminating(o: &Value) -> String {
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating".into()
    } else {
        s(o, "/status/phase").into()
    }
}

/// The subjects of a binding of one kind: users, groups, `ns/name` service accounts.
fn subjects(o: &Value, kind: &str) -> String {
    let list: Vec<String> = o
        .get("subjects")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|sj| sj["kind"] == kind)
                .map(|sj| {
                    let name = sj["name"].as_str().unwrap_or("");
                    match (kind, sj["namespace"].as_str()) {
                        ("ServiceAccount", Some(ns)) => format!("{ns}/{name}"),
                        _ => name.to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    list.join(", ")
}

/// Hosts of an Ingress: `*` for a rule without host, at most 3 then `+ N more...`.
fn ingress_hosts(o: &Value) -> String {
    let hosts: Vec<String> = o
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    r["host"]
                        .as_str()
                        .filter(|h| !h.is_empty())
                        .unwrap_or("*")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    if hosts.is_empty() {
        return "*".into();
    }
    if hosts.len() > 3 {
        format!("{} + {} more...", hosts[..3].join(","), hosts.len() - 3)
    } else {
        hosts.join(",")
    }
}

fn load_balancer_address(o: &Value) -> String {
    o.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// The HPA's TARGETS as upstream's `formatHPAMetrics`: `<current>/<target>`
/// per metric, the current value from the status metric at the same index
/// (`<unknown>` until measured), at most two then `+ N more...`.
fn hpa_targets(o: &Value) -> String {
    let specs: &[Value] = o
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    if specs.is_empty() {
        return "<none>".into();
    }
    let statuses: &[Value] = o
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    // A Go *Quantity printed with String(): nil is "<nil>".
    let q = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => "<nil>".to_string(),
    };
    let mut out = Vec::new();
    for (i, m) in specs.iter().enumerate() {
        let key = match m["type"].as_str().unwrap_or("") {
            "Resource" => "resource",
            "ContainerResource" => "containerResource",
            "Pods" => "pods",
            "Object" => "object",
            "External" => "external",
            _ => {
                out.push("<unknown type>".to_string());
                continue;
            }
        };
        let target = &m[key]["target"];
        // The status of the same source at the same index, if any.
        let current = statuses
            .get(i)
            .map(|s| &s[key])
            .filter(|s| s.is_object())
            .map(|s| &s["current"]);
        let unknown = || "<unknown>".to_string();
        let avg_value = !target["averageValue"].is_null();
        out.push(match key {
            "external" | "object" if avg_value => format!(
                "{}/{} (avg)",
                current
                    .filter(|c| !c["averageValue"].is_null())
                    .map_or_else(unknown, |c| q(&c["averageValue"])),
                q(&target["averageValue"])
            ),
            "external" | "object" => format!(
                "{}/{}",
                current.map_or_else(unknown, |c| q(&c["value"])),
                q(&target["value"])
            ),
            "pods" => format!(
                "{}/{}",
                current.map_or_else(unknown, |c| q(&c["averageValue"])),
                q(&target["averageValue"])
            ),
            _ => {
                let name = m[key]["name"].as_str().unwrap_or("");
                if avg_value {
                    format!(
                        "{name}: {}/{}",
                        current.map_or_else(unknown, |c| q(&c["averageValue"])),
                        q(&target["averageValue"])
                    )
                } else {
                    let cur = current
                        .and_then(|c| c["averageUtilization"].as_i64())
                        .map_or_else(unknown, |u| format!("{u}%"));
                    let want = target["averageUtilization"]
                        .as_i64()
                        .map_or("<auto>".to_string(), |u| format!("{u}%"));
                    format!("{name}: {cur}/{want}")
                }
            }
        });
    }
    if out.len() > 2 {
        format!("{} + {} more...", out[..2].join(", "), out.len() - 2)
    } else {
        out.join(", ")
    }
}

/// `used/hard` per resource of a ResourceQuota, split into requests and limits.
fn quota_columns(o: &Value) -> (String, String) {
    let hard = o
        .pointer("/status/hard")
        .or(o.pointer("/spec/hard"))
        .and_then(Value::as_object);
    let used = o.pointer("/status/used").and_then(Value::as_object);
    let (mut req, mut lim) = (Vec::new(), Vec::new());
    for (k, h) in hard.into_iter().flatten() {
        let u = used
            .and_then(|u| u.get(k))
            .and_then(Value::as_str)
            .unwrap_or("0");
        let entry = format!("{k}: {u}/{}", h.as_str().unwrap_or(""));
        if k.starts_with("limits.") {
            lim.push(entry);
        } else {
            req.push(entry);
        }
    }
    (req.join(", "), lim.join(", "))
}

/// extractCSRStatus: Denied, else Approved, else Pending; then `,Failed` and `,Issued`.
fn csr_condition(o: &Value) -> String {
    let has = |t: &str| {
        o.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == t))
    };
    let mut out = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        out.push_str(",Failed");
    }
    if o.pointer("/status/certificate")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty())
    {
        out.push_str(",Issued");
    }
    out
}

/// One row for `o`, if `rd` has its own printer here.
pub fn row(rd: &ResourceDef, o: &Value) -> Option<Vec<Value>> {
    // Upstream prints the internal object: a converted kind's columns are read
    // from its stored form (an autoscaling/v1 HPA's metrics from v2's).
    let stored;
    let o = if rd.conversion.is_some() {
        stored = rd.to_storage(o.clone());
        &stored
    } else {
        o
    };
    let name = json!(super::objects::meta_str(o, "name"));
    let age = json!(age(o));
    Some(match (rd.group, rd.kind) {
        ("", "PodTemplate") => {
            let (c, im) = containers_images(o, "/template/spec/containers");
            vec![
                name,
                json!(c),
                json!(im),
                json!(map_selector(o.pointer("/template/metadata/labels"))),
            ]
        }
        ("policy", "PodDisruptionBudget") => vec![
            name,
            json!(int_or_string(o.pointer("/spec/minAvailable")).unwrap_or_else(|| "N/A".into())),
            json!(int_or_string(o.pointer("/spec/maxUnavailable")).unwrap_or_else(|| "N/A".into())),
            json!(i(o, "/status/disruptionsAllowed")),
            age,
        ],
        ("", "ReplicationController") => {
            let (c, im) = containers_images(o, "/spec/template/spec/containers");
            vec![
                name,
                json!(i(o, "/spec/replicas")),
                json!(i(o, "/status/replicas")),
                json!(i(o, "/status/readyReplicas")),
                age,
                json!(c),
                json!(im),
                json!(map_selector(o.pointer("/spec/selector"))),
            ]
        }
        ("batch", "CronJob") => {
            let (c, im) = containers_images(o, "/spec/jobTemplate/spec/template/spec/containers");
            let last = o
                .pointer("/status/lastScheduleTime")
                .and_then(Value::as_str)
                .map(|t| super::table::age_of(Some(t)))
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                json!(s(o, "/spec/schedule")),
                json!(or_none(s(o, "/spec/timeZone").into())),
                json!(bool_ptr(o, "/spec/suspend")),
                json!(o
                    .pointer("/status/active")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)),
                json!(last),
                age,
                json!(c),
                json!(im),
                json!(selector_string(
                    o.pointer("/spec/jobTemplate/spec/selector")
                )),
            ]
        }
        ("networking.k8s.io", "Ingress") => {
            let ports = if o
                .pointer("/spec/tls")
                .and_then(Value::as_array)
                .is_some_and(|t| !t.is_empty())
            {
                "80, 443"
            } else {
                "80"
            };
            vec![
                name,
                json!(or_none(s(o, "/spec/ingressClassName").into())),
                json!(ingress_hosts(o)),
                json!(load_balancer_address(o)),
                json!(ports),
                age,
            ]
        }
        ("networking.k8s.io", "IngressClass") => {
            let params = o.pointer("/spec/parameters").map(|p| {
                let kind = p["kind"].as_str().unwrap_or("");
                let name = p["name"].as_str().unwrap_or("");
                match p["apiGroup"].as_str() {
                    Some(g) if !g.is_empty() => format!("{kind}.{g}/{name}"),
                    _ => format!("{kind}/{name}"),
                }
            });
            vec![
                name,
                json!(s(o, "/spec/controller")),
                json!(params.unwrap_or_else(|| "<none>".into())),
                age,
            ]
        }
        ("apps", "StatefulSet") => {
            let (c, im) = containers_images(o, "/spec/template/spec/containers");
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    i(o, "/status/readyReplicas"),
                    i(o, "/spec/replicas")
                )),
                age,
                json!(c),
                json!(im),
            ]
        }
        ("", "PersistentVolume") => {
            let claim = o
                .pointer("/spec/claimRef")
                .map(|r| {
                    format!(
                        "{}/{}",
                        r["namespace"].as_str().unwrap_or(""),
                        r["name"].as_str().unwrap_or("")
                    )
                })
                .unwrap_or_default();
            vec![
                name,
                json!(s(o, "/spec/capacity/storage")),
                json!(access_modes(o, "/spec/accessModes")),
                json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
                json!(phase_or_terminating(o)),
                json!(claim),
                json!(s(o, "/spec/storageClassName")),
                json!(o
                    .pointer("/spec/volumeAttributesClassName")
                    .and_then(Value::as_str)
                    .unwrap_or("<unset>")),
                json!(s(o, "/status/reason")),
                age,
                json!(o
                    .pointer("/spec/volumeMode")
                    .and_then(Value::as_str)
                    .unwrap_or("<unset>")),
            ]
        }
        ("", "PersistentVolumeClaim") => {
            let bound = s(o, "/status/phase") == "Bound";
            vec![
                name,
                json!(phase_or_terminating(o)),
                json!(s(o, "/spec/volumeName")),
                json!(if bound {
                    s(o, "/status/capacity/storage")
                } else {
                    ""
                }),
                json!(if bound {
                    access_modes(o, "/status/accessModes")
                } else {
                    String::new()
                }),
                json!(s(o, "/spec/storageClassName")),
                json!(o
                    .pointer("/spec/volumeAttributesClassName")
                    .and_then(Value::as_str)
                    .unwrap_or("<unset>")),
                age,
                json!(o
                    .pointer("/spec/volumeMode")
                    .and_then(Value::as_str)
                    .unwrap_or("<unset>")),
            ]
        }
        ("autoscaling", "HorizontalPodAutoscaler") => vec![
            name,
            json!(format!(
                "{}/{}",
                s(o, "/spec/scaleTargetRef/kind"),
                s(o, "/spec/scaleTargetRef/name")
            )),
            json!(hpa_targets(o)),
            json!(o
                .pointer("/spec/minReplicas")
                .and_then(Value::as_i64)
                .map_or("<unset>".to_string(), |n| n.to_string())),
            json!(i(o, "/spec/maxReplicas")),
            json!(i(o, "/status/currentReplicas")),
            age,
        ],
        ("networking.k8s.io", "NetworkPolicy") => vec![
            name,
            json!(selector_string(o.pointer("/spec/podSelector"))),
            age,
        ],
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => vec![
            name,
            json!(format!(
                "{}/{}",
                s(o, "/roleRef/kind"),
                s(o, "/roleRef/name")
            )),
            age,
            json!(subjects(o, "User")),
            json!(subjects(o, "Group")),
            json!(subjects(o, "ServiceAccount")),
        ],
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            let duration = o
                .pointer("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .map_or("<none>".to_string(), super::table::human_duration);
            vec![
                name,
                age,
                json!(s(o, "/spec/signerName")),
                json!(s(o, "/spec/username")),
                json!(duration),
                json!(csr_condition(o)),
            ]
        }
        ("storage.k8s.io", "StorageClass") => {
            let default = o
                .pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class")
                .and_then(Value::as_str)
                == Some("true")
                || o.pointer(
                    "/metadata/annotations/storageclass.beta.kubernetes.io~1is-default-class",
                )
                .and_then(Value::as_str)
                    == Some("true");
            let shown = format!(
                "{}{}",
                super::objects::meta_str(o, "name"),
                if default { " (default)" } else { "" }
            );
            vec![
                json!(shown),
                json!(s(o, "/provisioner")),
                json!(o
                    .get("reclaimPolicy")
                    .and_then(Value::as_str)
                    .unwrap_or("Delete")),
                json!(o
                    .get("volumeBindingMode")
                    .and_then(Value::as_str)
                    .unwrap_or("Immediate")),
                json!(o
                    .get("allowVolumeExpansion")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    .to_string()),
                age,
            ]
        }
        ("", "ResourceQuota") => {
            let (req, lim) = quota_columns(o);
            vec![name, json!(req), json!(lim), age]
        }
        ("scheduling.k8s.io", "PriorityClass") => vec![
            name,
            json!(i(o, "/value")),
            json!(o
                .get("globalDefault")
                .and_then(Value::as_bool)
                .unwrap_or(false)),
            age,
            json!(o
                .get("preemptionPolicy")
                .and_then(Value::as_str)
                .unwrap_or("")),
        ],
        ("node.k8s.io", "RuntimeClass") => vec![name, json!(s(o, "/handler")), age],
        ("storage.k8s.io", "VolumeAttachment") => vec![
            name,
            json!(s(o, "/spec/attacher")),
            json!(s(o, "/spec/source/persistentVolumeName")),
            json!(s(o, "/spec/nodeName")),
            json!(o
                .pointer("/status/attached")
                .and_then(Value::as_bool)
                .unwrap_or(false)),
            age,
        ],
        ("storage.k8s.io", "CSINode") => vec![
            name,
            json!(o
                .pointer("/spec/drivers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)),
            age,
        ],
        ("storage.k8s.io", "CSIDriver") => {
            let tokens = o
                .pointer("/spec/tokenRequests")
                .and_then(Value::as_array)
                .map(|t| {
                    t.iter()
                        .filter_map(|r| r["audience"].as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let modes = o
                .pointer("/spec/volumeLifecycleModes")
                .and_then(Value::as_array)
                .map(|m| {
                    m.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                name,
                json!(o
                    .pointer("/spec/attachRequired")
                    .and_then(Value::as_bool)
                    .unwrap_or(true)),
                json!(o
                    .pointer("/spec/podInfoOnMount")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)),
                json!(o
                    .pointer("/spec/storageCapacity")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)),
                json!(or_none(tokens)),
                json!(o
                    .pointer("/spec/requiresRepublish")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)),
                json!(modes),
                age,
            ]
        }
        ("storage.k8s.io", "CSIStorageCapacity") => vec![
            name,
            json!(s(o, "/storageClassName")),
            json!(s(o, "/capacity")),
        ],
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration",
        ) => vec![
            name,
            json!(o
                .get("webhooks")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)),
            age,
        ],
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => {
            let pk = o
                .pointer("/spec/paramKind")
                .map(|p| {
                    format!(
                        "{}/{}",
                        p["apiVersion"].as_str().unwrap_or(""),
                        p["kind"].as_str().unwrap_or("")
                    )
                })
                .unwrap_or_else(|| "<unset>".into());
            vec![
                name,
                json!(o
                    .pointer("/spec/validations")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)),
                json!(pk),
                age,
            ]
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => {
            let pr = o
                .pointer("/spec/paramRef")
                .map(|p| {
                    let n = p["name"].as_str().unwrap_or("");
                    match p["namespace"].as_str() {
                        Some(ns) if !ns.is_empty() => format!("{ns}/{n}"),
                        _ => n.to_string(),
                    }
                })
                .unwrap_or_else(|| "<unset>".into());
            vec![name, json!(s(o, "/spec/policyName")), json!(pr), age]
        }
        ("flowcontrol.apiserver.k8s.io", "FlowSchema") => {
            let dm = o
                .pointer("/spec/distinguisherMethod/type")
                .and_then(Value::as_str)
                .unwrap_or("<none>");
            let missing = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Dangling"))
                .and_then(|c| c["status"].as_str())
                .unwrap_or("Unknown");
            vec![
                name,
                json!(s(o, "/spec/priorityLevelConfiguration/name")),
                json!(i(o, "/spec/matchingPrecedence").to_string()),
                json!(dm),
                age,
                json!(missing),
            ]
        }
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration") => {
            let limited = o.pointer("/spec/limited");
            let q = |f: &str| {
                limited
                    .and_then(|l| l.pointer(&format!("/limitResponse/queuing/{f}")))
                    .and_then(Value::as_i64)
                    .map_or("<none>".to_string(), |n| n.to_string())
            };
            let ncs = limited
                .and_then(|l| l["nominalConcurrencyShares"].as_i64())
                .map_or("<none>".to_string(), |n| n.to_string());
            vec![
                name,
                json!(s(o, "/spec/type")),
                json!(ncs),
                json!(q("queues")),
                json!(q("handSize")),
                json!(q("queueLengthLimit")),
                age,
            ]
        }
        ("networking.k8s.io", "ServiceCIDR") => {
            let cidrs = o
                .pointer("/spec/cidrs")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![name, json!(cidrs), age]
        }
        ("networking.k8s.io", "IPAddress") => {
            let pr = o
                .pointer("/spec/parentRef")
                .map(|p| {
                    let g = p["group"]
                        .as_str()
                        .filter(|g| !g.is_empty())
                        .map(|g| format!(".{g}"))
                        .unwrap_or_default();
                    format!(
                        "{}{g}/{}/{}",
                        p["resource"].as_str().unwrap_or(""),
                        p["namespace"].as_str().unwrap_or(""),
                        p["name"].as_str().unwrap_or("")
                    )
                })
                .unwrap_or_default();
            vec![name, json!(pr)]
        }
        ("apiregistration.k8s.io", "APIService") => {
            let svc = o
                .pointer("/spec/service")
                .map(|sv| {
                    format!(
                        "{}/{}",
                        sv["namespace"].as_str().unwrap_or(""),
                        sv["name"].as_str().unwrap_or("")
                    )
                })
                .unwrap_or_else(|| "Local".into());
            let avail = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Available"))
                .map(|c| {
                    let st = c["status"].as_str().unwrap_or("Unknown");
                    match c["reason"].as_str() {
                        Some(r) if st != "True" && !r.is_empty() => format!("{st} ({r})"),
                        _ => st.to_string(),
                    }
                })
                .unwrap_or_else(|| "Unknown".into());
            vec![name, json!(svc), json!(avail), age]
        }
        _ => return None,
    })
}
