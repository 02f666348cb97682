//! Pure cgroup v2, for real. This CI host has a hybrid v1 layout, so the test boots a guest
//! (qemu: KVM, or TCG where KVM cannot boot Debian's kernel) whose only cgroup hierarchy is
//! cgroup2 on /sys/fs/cgroup, with this host's root filesystem shared read-only as its userland.
//! There the built `rktup agent` runs static pods; the guest records what it saw into a shared
//! directory and this test checks it: the limits in memory.max / cpu.max / pids.max, an
//! OOMKilled container (from memory.events), the device BPF program of an unprivileged
//! container (block devices refused, /dev/null works), and no pod cgroup left once the pods are
//! gone.

use rktup_testkit::agent::{boot_guest, guest_dir, rktup_bin, vm_plan};
use std::path::Path;

const API: &str = "127.0.0.1:15441";

/// The guest's /init (busybox, in the initramfs): mounts the host root read-only over 9p with
/// tmpfs on /tmp and /run, cgroup2 alone on /sys/fs/cgroup, and runs guest.sh chrooted there.
fn guest_init(insmods: &str) -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
{insmods}
o="trans=virtio,version=9p2000.L,msize=512000"
mount -t 9p -o $o,cache=loose,ro host /host || poweroff -f
mount -t tmpfs tmp /host/tmp
mount -t tmpfs run /host/run
mkdir /host/tmp/io
mount -t 9p -o $o,cache=none io /host/tmp/io || poweroff -f
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup
mount --bind /dev /host/dev
ip link set lo up
chroot /host /bin/sh /tmp/io/guest.sh > /host/tmp/io/guest.log 2>&1
echo $? > /host/tmp/io/rc
poweroff -f
"#
    )
}

/// What runs in the guest (the host's /bin/sh): the agent, an imported image, two pods.
fn guest_script(rktup: &Path) -> String {
    format!(
        r#"set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
IO=/tmp/io
RKTUP={rktup}
EP={API}
grep cgroup /proc/self/mountinfo > $IO/cgroup-mounts
cat /sys/fs/cgroup/cgroup.controllers > $IO/controllers
modprobe overlay
mkdir -p /tmp/root /tmp/manifests
$RKTUP agent --root-dir /tmp/root --pod-manifest-path /tmp/manifests --rkt-api-endpoint $EP \
  --sync-period-ms 200 --restart-backoff-ms 200 --v 4 > $IO/agent.log 2>&1 &
agent=$!
i=0
until $RKTUP rkt list --dir /tmp/root > /dev/null 2>&1; do
  i=$((i+1)); [ $i -gt 600 ] && {{ echo "the agent's api-service did not come up"; exit 1; }}
  sleep 0.2
done
$RKTUP rkt image import $IO/busybox.tar --name test/busybox:1 --dir /tmp/root > $IO/import 2>&1 || exit 1
cp $IO/limited.yaml $IO/oom.yaml /tmp/manifests/
mkdir -p /tmp/hostdev && mknod /tmp/hostdev/blk b 7 0
cp $IO/devices.yaml /tmp/manifests/
i=0
until grep -q devices-done /tmp/root/pods/*/logs/dev/0.log 2>/dev/null; do
  i=$((i+1)); [ $i -gt 600 ] && {{ echo "the devices pod did not finish"; break; }}
  sleep 0.2
done
cat /tmp/root/pods/*/logs/dev/0.log > $IO/devices.log
i=0
until grep -q OOMKilled $IO/pods.json 2>/dev/null && ls /sys/fs/cgroup/rktup/k8s_*/limited/memory.max > /dev/null 2>&1; do
  i=$((i+1)); [ $i -gt 600 ] && {{ echo "pods did not reach their states"; break; }}
  busybox wget -qO $IO/pods.json http://$EP/v1/pods
  sleep 0.2
done
busybox wget -qO $IO/pods.json http://$EP/v1/pods
for f in memory.max memory.swap.max cpu.max pids.max cgroup.procs; do
  cat /sys/fs/cgroup/rktup/k8s_*/limited/$f > $IO/limited.$f
done
for p in $(cat $IO/limited.cgroup.procs); do
  tr '\0' ' ' < /proc/$p/cmdline >> $IO/limited.cmdlines; echo >> $IO/limited.cmdlines
done
cat /sys/fs/cgroup/cgroup.subtree_control > $IO/root.subtree_control
find /sys/fs/cgroup/rktup -maxdepth 2 -type d > $IO/cgroups-running
rm /tmp/manifests/*.yaml
i=0
until [ "$(busybox wget -qO- http://$EP/v1/pods)" = "[]" ]; do
  i=$((i+1)); [ $i -gt 600 ] && {{ echo "pods were not removed"; break; }}
  sleep 0.2
done
find /sys/fs/cgroup/rktup -maxdepth 2 -type d > $IO/cgroups-after 2>&1
kill $agent
wait $agent
echo ok > $IO/done
"#,
        rktup = rktup.display()
    )
}

#[test]
fn pure_cgroup_v2_limits_oom_and_cleanup_in_a_guest() {
    let test = "pure_cgroup_v2_limits_oom_and_cleanup_in_a_guest";
    let Some(kvm) = vm_plan(test) else {
        return;
    };
    let dir = guest_dir();
    let io = dir.path().join("io");
    std::fs::write(
        io.join("limited.yaml"),
        r#"metadata: {name: limited}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: limited
    image: test/busybox:1
    imagePullPolicy: Never
    command: ["sleep", "1000"]
    resources: {limits: {memory: 48Mi, cpu: 250m, pids: "64"}}
"#,
    )
    .expect("write manifest");
    std::fs::write(
        io.join("oom.yaml"),
        r#"metadata: {name: oom}
spec:
  hostNetwork: true
  restartPolicy: Never
  containers:
  - name: hog
    image: test/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}"]
    resources: {limits: {memory: 32Mi}}
"#,
    )
    .expect("write manifest");
    // An unprivileged container as root (CAP_MKNOD): the device BPF program refuses mknod of a
    // block device and opening one (a node the guest made in a hostPath), /dev/null works.
    std::fs::write(
        io.join("devices.yaml"),
        r#"metadata: {name: devices}
spec:
  hostNetwork: true
  restartPolicy: Never
  volumes:
  - {name: hostdev, hostPath: {path: /tmp/hostdev}}
  containers:
  - name: dev
    image: test/busybox:1
    imagePullPolicy: Never
    volumeMounts: [{name: hostdev, mountPath: /hostdev}]
    command:
    - sh
    - -c
    - |
      busybox mknod /tmp/sda b 8 0 2>&1 && echo mknod-block=ALLOWED
      head -c 1 /hostdev/blk 2>&1 > /dev/null && echo open-block=ALLOWED
      echo x > /dev/null && echo null=ok
      echo zero=$(head -c 3 /dev/zero | wc -c)
      echo devices-done
"#,
    )
    .expect("write manifest");

    std::fs::write(io.join("guest.sh"), guest_script(&rktup_bin())).expect("write guest.sh");
    let guest = boot_guest(&kvm, dir.path(), guest_init, "quiet");
    let read = |name: &str| guest.read(name);
    let report = || guest.report();
    assert_eq!(read("done").trim(), "ok", "{}", report());

    // The guest really was pure v2: one cgroup2 mount, no v1 hierarchy, the controllers there.
    let mounts = read("cgroup-mounts");
    assert!(
        mounts.lines().count() == 1 && mounts.contains(" - cgroup2 "),
        "{mounts}"
    );
    let controllers = read("controllers");
    for c in ["memory", "cpu", "pids"] {
        assert!(
            controllers.split_whitespace().any(|x| x == c),
            "{controllers}"
        );
        assert!(
            read("root.subtree_control")
                .split_whitespace()
                .any(|x| x == c),
            "the runtime enables {c} for its subtree: {}",
            read("root.subtree_control")
        );
    }

    // Limits of the running container, in v2's files and units.
    assert_eq!(read("limited.memory.max").trim(), (48u64 << 20).to_string());
    assert_eq!(read("limited.memory.swap.max").trim(), "0");
    assert_eq!(read("limited.cpu.max").trim(), "25000 100000");
    assert_eq!(read("limited.pids.max").trim(), "64");
    assert!(
        read("limited.cmdlines")
            .lines()
            .any(|l| l.trim() == "sleep 1000"),
        "the container's process is in its cgroup: {}",
        read("limited.cmdlines")
    );

    let pods: Vec<serde_json::Value> = serde_json::from_str(&read("pods.json"))
        .unwrap_or_else(|e| panic!("pods.json: {e}\n{}", report()));
    let pod = |name: &str| {
        pods.iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("pod {name} not listed: {pods:#?}"))
            .clone()
    };
    let oom = pod("oom");
    let hog = &oom["status"]["containers"][0];
    assert_eq!(hog["reason"], "OOMKilled", "{oom:#}");
    assert_eq!(hog["exit_code"], 137, "{oom:#}");
    let limited = pod("limited");
    assert_eq!(
        limited["status"]["containers"][0]["state"], "running",
        "{limited:#}"
    );

    // The device allowlist for real on v2 (the BPF program): block devices refused with EPERM,
    // the default devices work.
    let dev = read("devices.log");
    assert!(dev.contains("devices-done"), "{dev}\n{}", report());
    assert!(
        dev.contains("mknod: /tmp/sda: Operation not permitted") && !dev.contains("=ALLOWED"),
        "mknod and open of block devices are refused: {dev}"
    );
    assert!(
        dev.contains("head: /hostdev/blk: Operation not permitted"),
        "opening the guest's block device node is refused: {dev}"
    );
    assert!(dev.contains("null=ok") && dev.contains("zero=3"), "{dev}");
    assert_eq!(
        pod("devices")["status"]["containers"][0]["exit_code"],
        0,
        "{:#}",
        pod("devices")
    );

    // Both pods' cgroups existed while they ran and none is left after removal.
    let running = read("cgroups-running");
    assert!(
        running.matches("/k8s_").count() >= 2,
        "pod cgroups while running: {running}"
    );
    let after = read("cgroups-after");
    assert!(!after.contains("k8s_"), "pod cgroups left behind: {after}");
}
