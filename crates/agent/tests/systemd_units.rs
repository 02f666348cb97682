//! The seed's journal, for real: "Pods are managed and named as systemd units … `k8s_${RKT_UUID}`
//! … `journalctl -u k8s_…`". This host's PID 1 is not systemd, so the test boots a guest (qemu,
//! Debian's kernel, this host's root filesystem read-only as its userland) whose PID 1 is this
//! host's systemd, starting only a test unit that runs the built `rktup agent` with a static pod.
//! The guest records what systemd and the journal say into a shared directory: the pod's
//! supervisor is the transient unit `k8s_<uuid>.service` (its MainPID the supervisor the runtime
//! recorded), `journalctl -u k8s_<uuid>` shows the container's stdout and stderr (stderr at
//! priority err), the pod outlives a killed agent, and once the pod is removed the unit is gone
//! while its journal stays.

use rktup_testkit::agent::{boot_guest, guest_dir, rktup_bin, vm_plan};
use std::path::Path;

const API: &str = "127.0.0.1:15442";

/// The guest's /init (busybox, in the initramfs): the host root over 9p below a tmpfs overlay,
/// tmpfs on /tmp and /run, a test target and unit written into /run/systemd/system, then systemd as PID 1
/// (switch_root keeps PID 1), told to start that target only: the system's early boot
/// (sysinit.target, journald, tmpfiles) and then the test unit, as a node boots its agent.
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
# The host root read-only below a tmpfs overlay: writable like a real root, and without this
# host's /.dockerenv, which would make systemd take the guest for a container.
mkdir -p /lower /upper
mount -t 9p -o $o,cache=loose,ro host /lower || poweroff -f
insmod /lower/lib/modules/$(uname -r)/kernel/fs/overlayfs/overlay.ko
mount -t tmpfs upper /upper
mkdir /upper/u /upper/w
mount -t overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w overlay /host || poweroff -f
rm -f /host/.dockerenv
mount -t tmpfs tmp /host/tmp
mount -t tmpfs run /host/run
mkdir /host/tmp/io
mount -t 9p -o $o,cache=none io /host/tmp/io || poweroff -f
mkdir -p /host/run/systemd/system
cat > /host/run/systemd/system/rktup-test.target <<EOF
[Unit]
Description=rktup systemd guest test
AllowIsolate=yes
Wants=rktup-test.service
EOF
cat > /host/run/systemd/system/rktup-test.service <<EOF
[Unit]
Description=rktup systemd guest test script
[Service]
ExecStart=/bin/sh -c '/bin/sh /tmp/io/guest.sh > /tmp/io/guest.log 2>&1; echo \$\$? > /tmp/io/rc; /bin/systemctl poweroff --force --force'
EOF
echo "rktup-init: $(cat /proc/cmdline); units: $(ls /host/run/systemd/system)"
umount /proc /sys /dev
exec switch_root /host /lib/systemd/systemd --unit=rktup-test.target
"#
    )
}

/// What the test unit runs (the host's /bin/sh, under systemd).
fn guest_script(rktup: &Path) -> String {
    format!(
        r#"set -ux
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
IO=/tmp/io
RKTUP={rktup}
EP={API}
cat /proc/1/comm > $IO/pid1
[ -d /run/systemd/system ] && echo yes > $IO/systemd-booted
modprobe overlay
mkdir -p /tmp/root /tmp/manifests
# What systemd says, for the test's report when something does not happen.
diag() {{
  {{ echo "== $1"; systemctl list-units --all --no-pager 'k8s_*'; systemctl status --no-pager -l 'k8s_*';
    cat /tmp/root/pods/*/stage1.log; journalctl -b --no-pager | tail -40; }} >> $IO/diag 2>&1
}}
start_agent() {{
  $RKTUP agent --root-dir /tmp/root --pod-manifest-path /tmp/manifests --rkt-api-endpoint $EP \
    --sync-period-ms 200 --restart-backoff-ms 200 --v 4 >> $IO/agent.log 2>&1 &
  agent=$!
  i=0
  until $RKTUP rkt list --dir /tmp/root > /dev/null 2>&1 && busybox wget -qO /dev/null http://$EP/v1/pods; do
    i=$((i+1)); [ $i -gt 600 ] && {{ echo "the agent's api-service did not come up"; exit 1; }}
    sleep 0.2
  done
}}
start_agent
$RKTUP rkt image import $IO/busybox.tar --name test/busybox:1 --dir /tmp/root > $IO/import 2>&1 || exit 1
cp $IO/journal.yaml /tmp/manifests/
i=0
until grep -q "to the journal" /tmp/root/pods/*/logs/app/0.log 2>/dev/null; do
  i=$((i+1)); [ $i -gt 600 ] && {{ echo "the pod did not print"; diag "no output"; exit 1; }}
  sleep 0.2
done
uuid=$(ls /tmp/root/pods)
echo $uuid > $IO/uuid
$RKTUP rkt list --full --no-legend --dir /tmp/root > $IO/rkt-list
cp /tmp/root/pods/$uuid/status.json $IO/status.json
systemctl show -p Id,ActiveState,MainPID,ControlGroup,SyslogIdentifier,CollectMode k8s_$uuid > $IO/unit.show
i=0
until journalctl -u k8s_$uuid --no-pager -o cat | grep -q "on stderr"; do
  i=$((i+1)); [ $i -gt 300 ] && break
  sleep 0.2
done
journalctl -u k8s_$uuid --no-pager -o cat > $IO/journal
journalctl -u k8s_$uuid --no-pager -o cat -p err > $IO/journal.err
journalctl -u k8s_$uuid --no-pager -o verbose > $IO/journal.verbose
cat /tmp/root/pods/$uuid/logs/app/0.log > $IO/cri.log
cat /tmp/root/pods/$uuid/stage1.log > $IO/stage1.log
cat /sys/fs/cgroup/rktup/k8s_$uuid/app/memory.max > $IO/memory.max
# The pod outlives its agent, as rkt pods outlived the kubelet.
kill -9 $agent
wait $agent
sleep 1
systemctl is-active k8s_$uuid > $IO/active-without-agent
start_agent
rm /tmp/manifests/journal.yaml
i=0
until [ "$(busybox wget -qO- http://$EP/v1/pods)" = "[]" ]; do
  i=$((i+1)); [ $i -gt 600 ] && {{ echo "the pod was not removed"; break; }}
  sleep 0.2
done
sleep 0.5
systemctl list-units --all --no-legend --plain 'k8s_*' > $IO/units-after 2>&1
journalctl -u k8s_$uuid --no-pager -o cat > $IO/journal-after
kill $agent
wait $agent
echo ok > $IO/done
"#,
        rktup = rktup.display()
    )
}

#[test]
fn pods_run_as_transient_units_with_their_output_in_the_journal_in_a_systemd_guest() {
    let test = "pods_run_as_transient_units_with_their_output_in_the_journal_in_a_systemd_guest";
    let Some(kvm) = vm_plan(test) else {
        return;
    };
    let dir = guest_dir();
    let io = dir.path().join("io");
    std::fs::write(
        io.join("journal.yaml"),
        r#"metadata: {name: journal, namespace: default}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: test/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "echo hello from the pod to the journal; echo trouble on stderr >&2; exec sleep 1000"]
    resources: {limits: {memory: 48Mi}}
"#,
    )
    .expect("write manifest");
    std::fs::write(io.join("guest.sh"), guest_script(&rktup_bin())).expect("write guest.sh");
    let guest = boot_guest(
        &kvm,
        dir.path(),
        guest_init,
        "systemd.unit=rktup-test.target",
    );
    let report = || guest.report();
    assert_eq!(guest.read("done").trim(), "ok", "{}", report());

    // systemd really was PID 1.
    assert_eq!(guest.read("pid1").trim(), "systemd", "{}", report());
    assert_eq!(guest.read("systemd-booted").trim(), "yes");

    // The supervisor is the unit k8s_<uuid>.service, as the seed names it, and the unit's main
    // process is the supervisor the runtime recorded for the pod.
    let uuid = guest.read("uuid").trim().to_string();
    assert!(
        guest.read("rkt-list").contains(&uuid),
        "rkt list --full shows the uuid the unit is named after: {}",
        guest.read("rkt-list")
    );
    let show = guest.read("unit.show");
    let prop = |k: &str| {
        show.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} not in systemctl show: {show}\n{}", report()))
            .to_string()
    };
    assert_eq!(prop("Id"), format!("k8s_{uuid}.service"), "{show}");
    assert_eq!(prop("ActiveState"), "active", "{show}");
    assert_eq!(prop("SyslogIdentifier"), "default/journal", "{show}");
    assert_eq!(prop("CollectMode"), "inactive-or-failed", "{show}");
    assert_eq!(
        prop("ControlGroup"),
        format!("/system.slice/k8s_{uuid}.service"),
        "{show}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&guest.read("status.json")).expect("status.json");
    assert_eq!(
        prop("MainPID"),
        status["supervisor_pid"].to_string(),
        "the unit's main process is the pod's supervisor: {show}\n{status:#}"
    );

    // `journalctl -u k8s_<uuid>`: the container's stdout and stderr, stderr at priority err.
    let journal = guest.read("journal");
    println!("journalctl -u k8s_{uuid} -o cat:\n{journal}");
    assert!(
        journal.contains("app: hello from the pod to the journal")
            && journal.contains("app: trouble on stderr"),
        "journalctl -u k8s_{uuid}:\n{journal}\n{}",
        report()
    );
    let err = guest.read("journal.err");
    assert!(
        err.contains("app: trouble on stderr") && !err.contains("hello from the pod"),
        "journalctl -p err: {err}"
    );
    // The CRI log files kubectl logs reads are written as before, and the supervisor's own log
    // still goes to stage1.log, not the journal.
    let cri = guest.read("cri.log");
    assert!(
        cri.contains(" stdout F hello from the pod to the journal")
            && cri.contains(" stderr F trouble on stderr"),
        "{cri}"
    );
    assert!(
        !guest.read("stage1.log").is_empty(),
        "stage1.log is written"
    );
    assert!(
        !journal.contains("stage1"),
        "the supervisor's own log stays out of the pod's journal: {journal}"
    );
    // Resource limits still apply to the container (the runtime's cgroup under systemd).
    assert_eq!(guest.read("memory.max").trim(), (48u64 << 20).to_string());

    // The pod outlived its agent; removed, it leaves no unit, and its journal stays readable.
    assert_eq!(guest.read("active-without-agent").trim(), "active");
    let after = guest.read("units-after");
    assert!(!after.contains("k8s_"), "units left after removal: {after}");
    assert!(
        guest
            .read("journal-after")
            .contains("app: hello from the pod to the journal"),
        "{}",
        guest.read("journal-after")
    );
}
