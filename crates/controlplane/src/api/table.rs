//! `meta.k8s.io/v1` Table rendering for `kubectl get`, with the columns
//! kube-apiserver's printers (pkg/printers/internalversion/printers.go)
//! produce for the same kinds.

use crate::registry::ResourceDef;
use serde_json::{json, Value};

pub(super) fn col(name: &str, ty: &str, format: &str, priority: i32, desc: &str) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": desc, "priority": priority})
}

/// `duration.HumanDuration` from k8s.io/apimachinery.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    let y = hours / 24 / 365;
    let d = (hours / 24) % 365;
    if hours < 24 * 365 * 8 && d != 0 {
        return format!("{y}y{d}d");
    }
    format!("{y}y")
}

pub(crate) fn age_of(ts: Option<&str>) -> String {
    let Some(ts) = ts else {
        return "<unknown>".into();
    };
    match ts.parse::<jiff::Timestamp>() {
        Ok(t) => human_duration(jiff::Timestamp::now().as_second() - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

pub(super) fn age(obj: &Value) -> String {
    age_of(
        obj.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str),
    )
}

pub(super) fn s<'a>(obj: &'a Value, ptr: &str) -> &'a str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

pub(super) fn i(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

pub(super) fn or_none(v: String) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v
    }
}

pub(super) fn containers_images(obj: &Value, ptr: &str) -> (String, String) {
    let cs = obj
        .pointer(ptr)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().filter_map(|c| c["name"].as_str()).collect();
    let images: Vec<&str> = cs.iter().filter_map(|c| c["image"].as_str()).collect();
    (names.join(","), images.join(","))
}

pub(super) fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "<none>".into();
    };
    let mut parts = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    if let Some(es) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in es {
            let vals: Vec<&str> = e["values"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let k = e["key"].as_str().unwrap_or("");
            parts.push(match e["operator"].as_str().unwrap_or("") {
                "In" => format!("{k} in ({})", vals.join(",")),
                "NotIn" => format!("{k} notin ({})", vals.join(",")),
                "Exists" => k.to_string(),
                "DoesNotExist" => format!("!{k}"),
                _ => continue,
            });
        }
    }
    parts.sort();
    or_none(parts.join(","))
}

pub(super) fn map_selector(sel: Option<&Value>) -> String {
    let Some(m) = sel.and_then(Value::as_object) else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    parts.sort();
    or_none(parts.join(","))
}

/// printPod's STATUS column.
pub fn pod_status(pod: &Value) -> String {
    let mut reason = s(pod, "/status/phase").to_string();
    if !s(pod, "/status/reason").is_empty() {
        reason = s(pod, "/status/reason").to_string();
    }
    let empty = vec![];
    let inits = pod
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let n_init = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map_or(0, |a| a.len());
    let mut initializing = false;
    for (idx, c) in inits.iter().enumerate() {
        let term = c.pointer("/state/terminated");
        if term.is_some_and(|t| t["exitCode"].as_i64() == Some(0)) {
            continue;
        }
        if let Some(t) = term {
            reason = match t["reason"].as_str() {
                Some(r) if !r.is_empty() => format!("Init:{r}"),
                _ => format!("Init:ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
            };
        } else if let Some(r) = c
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            reason = format!("Init:{r}");
        } else {
            reason = format!("Init:{idx}/{n_init}");
        }
        initializing = true;
        break;
    }
    if !initializing {
        let mut has_running = false;
        let cs = pod
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for c in cs.iter().rev() {
            if let Some(r) = c
                .pointer("/state/waiting/reason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
            {
                reason = r.to_string();
            } else if let Some(t) = c.pointer("/state/terminated") {
                reason = match t["reason"].as_str() {
                    Some(r) if !r.is_empty() => r.to_string(),
                    _ => match t["signal"].as_i64() {
                        Some(sig) if sig != 0 => format!("Signal:{sig}"),
                        _ => format!("ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
                    },
                };
            } else if c.pointer("/state/running").is_some() && c["ready"].as_bool() == Some(true) {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = "Running".into();
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some()
        && s(pod, "/status/reason") != "NodeLost"
    {
        reason = "Terminating".into();
    }
    reason
}

fn pod_row(pod: &Value) -> Vec<Value> {
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, |a| a.len());
    let cs = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = cs
        .iter()
        .filter(|c| c["ready"].as_bool() == Some(true))
        .count();
    let restarts: i64 = cs
        .iter()
        .map(|c| c["restartCount"].as_i64().unwrap_or(0))
        .sum();
    let gates = pod
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .map_or(0, |a| a.len());
    vec![
        json!(super::objects::meta_str(pod, "name")),
        json!(format!("{ready}/{total}")),
        json!(pod_status(pod)),
        json!(restarts.to_string()),
        json!(age(pod)),
        json!(or_none(s(pod, "/status/podIP").to_string())),
        json!(or_none(s(pod, "/spec/nodeName").to_string())),
        json!(or_none(s(pod, "/status/nominatedNodeName").to_string())),
        json!(if gates == 0 {
            "<none>".to_string()
        } else {
            format!("0/{gates}")
        }),
    ]
}

fn node_row(n: &Value) -> Vec<Value> {
    let conds = n
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = conds.iter().find(|c| c["type"] == "Ready");
    let mut status = match ready.and_then(|c| c["status"].as_str()) {
        Some("True") => "Ready".to_string(),
        _ => "NotReady".to_string(),
    };
    if n.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = n
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/").map(String::from))
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let addr = |t: &str| {
        n.pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|x| x["type"] == t))
            .and_then(|x| x["address"].as_str())
            .unwrap_or("<none>")
            .to_string()
    };
    vec![
        json!(super::objects::meta_str(n, "name")),
        json!(status),
        json!(or_none(roles.join(","))),
        json!(age(n)),
        json!(s(n, "/status/nodeInfo/kubeletVersion")),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(or_none(s(n, "/status/nodeInfo/osImage").to_string())),
        json!(or_none(s(n, "/status/nodeInfo/kernelVersion").to_string())),
        json!(or_none(
            s(n, "/status/nodeInfo/containerRuntimeVersion").to_string()
        )),
    ]
}

fn service_row(svc: &Value) -> Vec<Value> {
    let ty = s(svc, "/spec/type");
    let ports: Vec<String> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64() {
                        Some(np) if np != 0 => format!("{}:{np}/{proto}", p["port"]),
                        _ => format!("{}/{proto}", p["port"]),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let external = match ty {
        "ExternalName" => s(svc, "/spec/externalName").to_string(),
        "LoadBalancer" => {
            let ing: Vec<&str> = svc
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x["ip"].as_str().or(x["hostname"].as_str()))
                        .collect()
                })
                .unwrap_or_default();
            if ing.is_empty() {
                "<pending>".into()
            } else {
                ing.join(",")
            }
        }
        _ => {
            let ips: Vec<&str> = svc
                .pointer("/spec/externalIPs")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            or_none(ips.join(","))
        }
    };
    vec![
        json!(super::objects::meta_str(svc, "name")),
        json!(ty),
        json!(or_none(s(svc, "/spec/clusterIP").to_string())),
        json!(external),
        json!(or_none(ports.join(","))),
        json!(age(svc)),
        json!(map_selector(svc.pointer("/spec/selector"))),
    ]
}

/// printEndpointSlice's PORTS: the first three port numbers (the name when
/// the number is unset, `*` when both are), then `+ N more...`.
fn endpointslice_ports(o: &Value) -> String {
    let ports = o.get("ports").and_then(Value::as_array);
    let list: Vec<String> = ports
        .into_iter()
        .flatten()
        .map(|p| match (p["port"].as_i64(), p["name"].as_str()) {
            (Some(n), _) => n.to_string(),
            (None, Some(name)) => name.to_string(),
            (None, None) => "*".to_string(),
        })
        .collect();
    list_with_more(&list)
}

/// printEndpointSlice's ENDPOINTS: every address of every endpoint, the
/// first three shown.
fn endpointslice_endpoints(o: &Value) -> String {
    let list: Vec<String> = o
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    list_with_more(&list)
}

/// `listWithMoreString`: three items, then `+ N more...`; `<unset>` when empty.
fn list_with_more(list: &[String]) -> String {
    const MAX: usize = 3;
    if list.len() > MAX {
        format!("{} + {} more...", list[..MAX].join(","), list.len() - MAX)
    } else if list.is_empty() {
        "<unset>".into()
    } else {
        list.join(",")
    }
}

/// Column definitions and one row per object.
pub fn columns(rd: &ResourceDef) -> Vec<Value> {
    if let Some(c) = rd.custom {
        return super::custom::table_columns(c);
    }
    let name = col("Name", "string", "name", 0, "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names");
    let age = col("Age", "string", "", 0, "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata");
    let c = |n: &str, p: i32, d: &str| col(n, "string", "", p, d);
    let int = |n: &str, d: &str| col(n, "integer", "", 0, d);
    match (rd.group, rd.kind) {
        ("", "Pod") => vec![name, c("Ready", 0, "The aggregate readiness state of this pod for accepting traffic."), c("Status", 0, "The aggregate status of the containers in this pod."), c("Restarts", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."), age, c("IP", 1, "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."), c("Node", 1, "NodeName is a request to schedule this pod onto a specific node."), c("Nominated Node", 1, "nominatedNodeName is set only when this pod preempts other pods on the node."), c("Readiness Gates", 1, "If specified, all readiness gates will be evaluated for pod readiness.")],
        ("", "Node") => vec![name, c("Status", 0, "The status of the node"), c("Roles", 0, "The roles of the node"), age, c("Version", 0, "Kubelet Version reported by the node."), c("Internal-IP", 1, "List of addresses reachable to the node. Queried from cloud provider, if available."), c("External-IP", 1, "List of addresses reachable to the node. Queried from cloud provider, if available."), c("OS-Image", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."), c("Kernel-Version", 1, "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."), c("Container-Runtime", 1, "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).")],
        ("", "Service") => vec![name, c("Type", 0, "type determines how the Service is exposed."), c("Cluster-IP", 0, "clusterIP is the IP address of the service and is usually assigned randomly."), c("External-IP", 0, "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."), c("Port(s)", 0, "The list of ports that are exposed by this service."), age, c("Selector", 1, "Route service traffic to pods with label keys and values matching this selector.")],
        ("apps", "Deployment") => vec![name, c("Ready", 0, "Number of the pod with ready state"), int("Up-to-date", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."), int("Available", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."), age, c("Containers", 1, "Names of each container in the template."), c("Images", 1, "Images referenced by each container in the template."), c("Selector", 1, "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.")],
        ("apps", "ReplicaSet") => vec![name, int("Desired", "Replicas is the number of desired replicas."), int("Current", "Replicas is the most recently observed number of replicas."), int("Ready", "The number of ready replicas for this replica set."), age, c("Containers", 1, "Names of each container in the template."), c("Images", 1, "Images referenced by each container in the template."), c("Selector", 1, "Selector is a label query over pods that should match the replica count.")],
        ("apps", "DaemonSet") => vec![name, int("Desired", "The total number of nodes that should be running the daemon pod."), int("Current", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."), int("Ready", "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."), int("Up-to-date", "The total number of nodes that are running updated daemon pod"), int("Available", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available."), c("Node Selector", 0, "NodeSelector is a selector which must be true for the pod to fit on a node."), age, c("Containers", 1, "Names of each container in the template."), c("Images", 1, "Images referenced by each container in the template."), c("Selector", 1, "A label query over pods that are managed by the daemon set.")],
        ("batch", "Job") => vec![name, c("Status", 0, "Status of the job."), c("Completions", 0, "The desired number of successfully finished pods the job should be run with."), c("Duration", 0, "Time required to complete the job."), age, c("Containers", 1, "Names of each container in the template."), c("Images", 1, "Images referenced by each container in the template."), c("Selector", 1, "A label query over pods that should match the pod count.")],
        ("", "Event") => vec![c("Last Seen", 0, "Time when last event occurred"), c("Type", 0, "Type of this event (Normal, Warning), new types could be added in the future."), c("Reason", 0, "This should be a short, machine understandable string that gives the reason for this event being generated."), c("Object", 0, "The object this Event is about."), c("Subobject", 1, "Subobject of this event."), c("Source", 1, "The component reporting this event."), c("Message", 0, "A human-readable description of the status of this operation."), c("First Seen", 1, "Time when first event occurred"), col("Count", "integer", "", 1, "The number of times this event has occurred."), col("Name", "string", "name", 1, "Name must be unique within a namespace.")],
        ("", "Namespace") => vec![name, c("Status", 0, "The status of the namespace"), age],
        ("", "Endpoints") => vec![name, c("Endpoints", 0, "Endpoints of the resource."), age],
        ("", "ConfigMap") => vec![name, int("Data", "Data contains the configuration data."), age],
        ("", "Secret") => vec![name, c("Type", 0, "The type of the secret"), int("Data", "Data contains the secret data."), age],
        ("", "ServiceAccount") => vec![name, age],
        ("apps", "ControllerRevision") => vec![name, c("Controller", 0, "Controller of the object"), int("Revision", "Revision indicates the revision of the state represented by Data."), age],
        ("coordination.k8s.io", "Lease") => vec![name, c("Holder", 0, "HolderIdentity contains the identity of the holder of a current lease."), age],
        ("discovery.k8s.io", "EndpointSlice") => vec![name, c("AddressType", 0, "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported:\n* IPv4: Represents an IPv4 Address.\n* IPv6: Represents an IPv6 Address.\n* FQDN: Represents a Fully Qualified Domain Name. (Deprecated) The EndpointSlice controller only generates, and kube-proxy only processes, slices of addressType \"IPv4\" and \"IPv6\". No semantics are defined for the \"FQDN\" type."), c("Ports", 0, "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. Each slice may include a maximum of 100 ports. Services always have at least 1 port, so EndpointSlices generated by the EndpointSlice controller will likewise always have at least 1 port. EndpointSlices used for other purposes may have an empty ports list."), c("Endpoints", 0, "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints."), age],
        _ => super::table_kinds::columns(rd).unwrap_or_else(|| vec![name, col("Created At", "date", "", 0, "CreationTimestamp is a timestamp representing the server time when this object was created.")]),
    }
}

pub fn row_cells(rd: &ResourceDef, o: &Value) -> Vec<Value> {
    if let Some(c) = rd.custom {
        return super::custom::table_cells(c, o);
    }
    let name = json!(super::objects::meta_str(o, "name"));
    match (rd.group, rd.kind) {
        ("", "Pod") => pod_row(o),
        ("", "Node") => node_row(o),
        ("", "Service") => service_row(o),
        ("apps", "Deployment") => {
            let (c, im) = containers_images(o, "/spec/template/spec/containers");
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    i(o, "/status/readyReplicas"),
                    i(o, "/spec/replicas")
                )),
                json!(i(o, "/status/updatedReplicas")),
                json!(i(o, "/status/availableReplicas")),
                json!(age(o)),
                json!(c),
                json!(im),
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        ("apps", "ReplicaSet") => {
            let (c, im) = containers_images(o, "/spec/template/spec/containers");
            vec![
                name,
                json!(i(o, "/spec/replicas")),
                json!(i(o, "/status/replicas")),
                json!(i(o, "/status/readyReplicas")),
                json!(age(o)),
                json!(c),
                json!(im),
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        ("apps", "DaemonSet") => {
            let (c, im) = containers_images(o, "/spec/template/spec/containers");
            vec![
                name,
                json!(i(o, "/status/desiredNumberScheduled")),
                json!(i(o, "/status/currentNumberScheduled")),
                json!(i(o, "/status/numberReady")),
                json!(i(o, "/status/updatedNumberScheduled")),
                json!(i(o, "/status/numberAvailable")),
                json!(map_selector(o.pointer("/spec/template/spec/nodeSelector"))),
                json!(age(o)),
                json!(c),
                json!(im),
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        ("apps", "ControllerRevision") => {
            // `<kind>.<group>/<name>` of the controller, as kubectl prints it.
            let controller = o
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .and_then(|refs| refs.iter().find(|r| r["controller"] == true))
                .map(|r| {
                    let kind = r["kind"].as_str().unwrap_or("").to_lowercase();
                    let group = r["apiVersion"]
                        .as_str()
                        .and_then(|av| av.rsplit_once('/'))
                        .map(|(g, _)| format!(".{g}"))
                        .unwrap_or_default();
                    format!("{kind}{group}/{}", r["name"].as_str().unwrap_or(""))
                })
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                json!(controller),
                json!(i(o, "/revision")),
                json!(age(o)),
            ]
        }
        ("batch", "Job") => {
            let (c, im) = containers_images(o, "/spec/template/spec/containers");
            let conds = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let has = |t: &str| {
                conds
                    .iter()
                    .any(|c| c["type"] == t && c["status"] == "True")
            };
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if o.pointer("/spec/suspend") == Some(&json!(true)) {
                "Suspended"
            } else {
                "Running"
            };
            let start = o
                .pointer("/status/startTime")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok());
            let end = o
                .pointer("/status/completionTime")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok());
            let duration = match (start, end) {
                (Some(s0), Some(e)) => human_duration(e.as_second() - s0.as_second()),
                (Some(s0), None) => {
                    human_duration(jiff::Timestamp::now().as_second() - s0.as_second())
                }
                _ => String::new(),
            };
            vec![
                name,
                json!(status),
                json!(format!(
                    "{}/{}",
                    i(o, "/status/succeeded"),
                    i(o, "/spec/completions")
                )),
                json!(duration),
                json!(age(o)),
                json!(c),
                json!(im),
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        ("", "Event") => {
            let last = o
                .get("lastTimestamp")
                .and_then(Value::as_str)
                .or(o.get("eventTime").and_then(Value::as_str));
            let first = o.get("firstTimestamp").and_then(Value::as_str).or(last);
            let obj = format!(
                "{}/{}",
                s(o, "/involvedObject/kind").to_lowercase(),
                s(o, "/involvedObject/name")
            );
            vec![
                json!(age_of(last)),
                json!(s(o, "/type")),
                json!(s(o, "/reason")),
                json!(obj),
                json!(s(o, "/involvedObject/fieldPath")),
                json!(format!("{}", s(o, "/source/component"))),
                json!(s(o, "/message")),
                json!(age_of(first)),
                json!(i(o, "/count").max(1)),
                name,
            ]
        }
        ("", "Namespace") => vec![name, json!(s(o, "/status/phase")), json!(age(o))],
        ("", "Endpoints") => {
            let mut eps = Vec::new();
            for sub in o
                .get("subsets")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                let ports: Vec<i64> = sub["ports"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|p| p["port"].as_i64()).collect())
                    .unwrap_or_default();
                for a in sub["addresses"].as_array().cloned().unwrap_or_default() {
                    let ip = a["ip"].as_str().unwrap_or("");
                    if ports.is_empty() {
                        eps.push(ip.to_string());
                    }
                    for p in &ports {
                        eps.push(format!("{ip}:{p}"));
                    }
                }
            }
            let shown = if eps.len() > 3 {
                format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
            } else {
                or_none(eps.join(","))
            };
            vec![name, json!(shown), json!(age(o))]
        }
        ("", "ConfigMap") => {
            let n = o
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
                + o.get("binaryData")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len());
            vec![name, json!(n), json!(age(o))]
        }
        ("", "Secret") => vec![
            name,
            json!(s(o, "/type")),
            json!(o
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())),
            json!(age(o)),
        ],
        ("", "ServiceAccount") => vec![name, json!(age(o))],
        ("coordination.k8s.io", "Lease") => {
            vec![name, json!(s(o, "/spec/holderIdentity")), json!(age(o))]
        }
        ("discovery.k8s.io", "EndpointSlice") => vec![
            name,
            json!(s(o, "/addressType")),
            json!(endpointslice_ports(o)),
            json!(endpointslice_endpoints(o)),
            json!(age(o)),
        ],
        _ => super::table_kinds::row(rd, o).unwrap_or_else(|| {
            vec![
                name,
                json!(o
                    .pointer("/metadata/creationTimestamp")
                    .cloned()
                    .unwrap_or(Value::Null)),
            ]
        }),
    }
}

/// A Table for `items`; `include` is the `includeObject` policy.
pub fn table(
    rd: &ResourceDef,
    items: &[&Value],
    rv: &str,
    cont: Option<&str>,
    include: &str,
    with_columns: bool,
) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let object = match include {
                "None" => Value::Null,
                "Object" => (*o).clone(),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))}),
            };
            json!({"cells": row_cells(rd, o), "object": object})
        })
        .collect();
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": if with_columns { Value::Array(columns(rd)) } else { Value::Array(vec![]) },
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_upstream() {
        for (s, want) in [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (10 * 3600, "10h"),
            (3 * 86400, "3d"),
            (3 * 86400 + 3600, "3d1h"),
            (400 * 86400, "400d"),
        ] {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }

    #[test]
    fn endpointslice_columns() {
        let o = json!({"addressType": "IPv4", "ports": [{"port": 80}, {"name": "dns"}, {}, {"port": 53}], "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3"]}, {"addresses": ["10.0.0.4"]}]});
        assert_eq!(endpointslice_ports(&o), "80,dns,* + 1 more...");
        assert_eq!(
            endpointslice_endpoints(&o),
            "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."
        );
        let empty = json!({"addressType": "IPv4", "endpoints": []});
        assert_eq!(endpointslice_ports(&empty), "<unset>");
        assert_eq!(endpointslice_endpoints(&empty), "<unset>");
    }

    #[test]
    fn pod_status_column() {
        let p = json!({"status": {"phase": "Running", "containerStatuses": [{"ready": false, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(pod_status(&p), "CrashLoopBackOff");
        let t = json!({"metadata": {"deletionTimestamp": "x"}, "status": {"phase": "Running"}});
        assert_eq!(pod_status(&t), "Terminating");
    }
}
