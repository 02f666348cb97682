//! Images end to end: real umoci-built images, Debian's docker-registry on 127.0.0.1, pulls over
//! plain HTTP (insecure registry), overlay stacking with whiteouts, import, list/rm/gc.

use rktup_runtime::image::{ensure_image, ImageStore, PullPolicy, Puller, Reference};
use rktup_testkit::{Images, Registry};
use std::collections::BTreeSet;
use std::ffi::CString;

fn mount_overlay(lower: &[std::path::PathBuf], target: &std::path::Path) {
    // Top layer first, as overlayfs wants.
    let lowers: Vec<String> = lower
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let opts = CString::new(format!("lowerdir={}", lowers.join(":"))).unwrap();
    let t = CString::new(target.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C strings.
    let r = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            t.as_ptr(),
            c"overlay".as_ptr(),
            libc::MS_RDONLY,
            opts.as_ptr() as *const libc::c_void,
        )
    };
    assert_eq!(r, 0, "mount overlay: {}", std::io::Error::last_os_error());
}

fn umount(target: &std::path::Path) {
    let t = CString::new(target.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::umount2(t.as_ptr(), 0) }, 0);
}

#[test]
fn pull_unpack_once_and_stack_with_whiteouts() {
    let images = Images::build();
    let reg = Registry::start();
    let bb = reg.push(&images.layout, "busybox", "test/busybox:1");
    let multi = reg.push(&images.layout, "multi", "test/multi:latest");
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();

    // Without --insecure-registry the client insists on TLS and fails.
    let strict = Puller::new();
    let err = ensure_image(&store, &strict, &bb, PullPolicy::IfNotPresent).unwrap_err();
    assert!(
        err.to_string().contains("failed to fetch https://"),
        "{err}"
    );

    let puller = Puller::new().with_insecure_registries(std::slice::from_ref(&reg.addr));
    // Concurrent pulls of the same image: both succeed and yield the same record.
    let (a, b) = std::thread::scope(|s| {
        let h1 = s.spawn(|| ensure_image(&store, &puller, &multi, PullPolicy::Always).unwrap());
        let h2 = s.spawn(|| ensure_image(&store, &puller, &multi, PullPolicy::Always).unwrap());
        (h1.join().unwrap(), h2.join().unwrap())
    });
    assert_eq!(a.id, b.id);
    assert_eq!(a.layers.len(), 2, "multi has two layers");
    let bbrec = ensure_image(&store, &puller, &bb, PullPolicy::IfNotPresent).unwrap();
    // The busybox layer is shared with multi: unpacked once, one directory.
    assert_eq!(bbrec.layers[0].digest, a.layers[0].digest);
    let layer_dirs = std::fs::read_dir(store.root().join("layers"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(layer_dirs, 2);

    // Stacked, the whiteout hides /etc/motd and the replaced dir has only the new file.
    let dirs = store.layer_dirs(&a).unwrap();
    let mnt = tempfile::tempdir().unwrap();
    mount_overlay(&dirs, mnt.path());
    let motd = mnt.path().join("etc/motd").exists();
    let layer2 = std::fs::read_to_string(mnt.path().join("etc/layer2")).unwrap_or_default();
    let data: BTreeSet<String> = std::fs::read_dir(mnt.path().join("var/lib/data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let has_busybox = mnt.path().join("bin/busybox").exists();
    umount(mnt.path());
    assert!(!motd, "whiteout must hide /etc/motd");
    assert_eq!(layer2, "layer two\n");
    assert_eq!(data, BTreeSet::from(["new".to_string()]));
    assert!(has_busybox);

    // Config reached the store.
    let cfg = store.config(&bbrec).unwrap();
    assert_eq!(cfg.cmd.as_deref(), Some(&["/bin/sh".to_string()][..]));

    // Never policy with a present image works; with an absent one it fails clearly.
    ensure_image(&store, &puller, &bb, PullPolicy::Never).unwrap();
    let e = ensure_image(&store, &puller, "127.0.0.1:1/none:1", PullPolicy::Never).unwrap_err();
    assert!(e.to_string().contains("imagePullPolicy is Never"), "{e}");

    // list / rm / gc
    assert_eq!(store.list().unwrap().len(), 2);
    let in_use = BTreeSet::from([bbrec.id.clone()]);
    let e = store.remove(&bb, &in_use).unwrap_err();
    assert!(e.to_string().contains("used by a pod"), "{e}");
    let removed = store.gc(&in_use).unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].id, a.id);
    let left = store.list().unwrap();
    assert_eq!(left.len(), 1);
    // multi's own layer is gone, the shared one stays.
    assert!(!store.layer_dir(&a.layers[1].digest).unwrap().exists());
    assert!(store.layer_dir(&a.layers[0].digest).unwrap().exists());
    store
        .remove(
            &Reference::parse(&bb).unwrap().to_string(),
            &BTreeSet::new(),
        )
        .unwrap();
    assert!(store.list().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn import_oci_and_docker_archives() {
    let images = Images::build();
    let dir = tempfile::tempdir().unwrap();
    let oci = dir.path().join("multi.oci.tar");
    let docker = dir.path().join("bb.docker.tar");
    images.oci_archive("multi", &oci);
    images.docker_archive("busybox", &docker, "example.com/air/busybox:v1");
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let recs =
        rktup_runtime::image::archive::import(&store, &oci, Some("example.com/air/multi:v2"))
            .unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].layers.len(), 2);
    let recs = rktup_runtime::image::archive::import(&store, &docker, None).unwrap();
    assert_eq!(
        recs[0].names,
        vec!["example.com/air/busybox:v1".to_string()]
    );
    let r = store.resolve("example.com/air/busybox:v1").unwrap();
    for d in store.layer_dirs(&r).unwrap() {
        assert!(d.exists());
    }
    assert!(store.resolve("example.com/air/multi:v2").is_ok());
    // Short ids as `rkt image list` prints them resolve too.
    assert_eq!(store.resolve(&r.short_id()).unwrap().id, r.id);
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, b"").unwrap();
    assert!(rktup_runtime::image::archive::import(&store, &junk, None).is_err());
}

/// `import_or_skip` (`rktup local image import`): an image the store holds whole, by manifest
/// digest, is not copied again — its blobs keep their inodes (a copy renames a new file over
/// them) — and says so; a new name still lands; a layer missing its unpacked tree brings the
/// import back.
#[test]
fn import_skips_images_already_present_by_digest() {
    use rktup_runtime::image::archive::import_or_skip;
    use std::os::unix::fs::MetadataExt;
    let images = Images::build();
    let dir = tempfile::tempdir().unwrap();
    let oci = dir.path().join("multi.oci.tar");
    let docker = dir.path().join("bb.docker.tar");
    images.oci_archive("multi", &oci);
    images.docker_archive("busybox", &docker, "example.com/air/busybox:v1");
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let inodes = |rec: &rktup_runtime::image::ImageRecord| -> Vec<u64> {
        std::iter::once(&rec.id)
            .chain(rec.layers.iter().map(|l| &l.digest))
            .map(|d| {
                std::fs::metadata(store.blob_path(d).unwrap())
                    .unwrap()
                    .ino()
            })
            .collect()
    };
    for (archive, name) in [(&oci, Some("example.com/air/multi:v2")), (&docker, None)] {
        let first = import_or_skip(&store, archive, name).unwrap();
        assert_eq!(first.len(), 1);
        assert!(!first[0].already_present, "{}", archive.display());
        let before = inodes(&first[0].record);
        let again = import_or_skip(&store, archive, name).unwrap();
        assert!(again[0].already_present, "{}", archive.display());
        assert_eq!(again[0].record.id, first[0].record.id);
        assert_eq!(inodes(&again[0].record), before, "blobs were rewritten");
    }
    // A new name for a present image is applied without a copy.
    let renamed = import_or_skip(&store, &docker, Some("example.com/air/other:v3")).unwrap();
    assert!(renamed[0].already_present);
    let r = store.resolve("example.com/air/other:v3").unwrap();
    assert_eq!(r.id, renamed[0].record.id);
    assert!(store.resolve("example.com/air/busybox:v1").is_ok());
    // A layer whose unpacked tree is gone: not present, imported again, and whole after.
    let layer = store.layer_dir(&r.layers[0].digest).unwrap();
    std::fs::remove_file(layer.with_extension("done")).unwrap();
    std::fs::remove_dir_all(&layer).unwrap();
    assert!(store.present(&r.id).is_none());
    let back = import_or_skip(&store, &docker, None).unwrap();
    assert!(!back[0].already_present);
    assert!(layer.is_dir() && store.present(&r.id).is_some());
}

#[test]
fn pull_policies_always_ifnotpresent_never() {
    let images = Images::build();
    let reg = Registry::start();
    let name = reg.push(&images.layout, "busybox", "test/moving:latest");
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let puller = Puller::new().with_insecure_registries(std::slice::from_ref(&reg.addr));
    // Default policy for :latest is Always, IfNotPresent for other tags (kubelet's rule).
    assert_eq!(PullPolicy::from_k8s(None, &name), PullPolicy::Always);
    assert_eq!(
        PullPolicy::from_k8s(None, "x/y:1"),
        PullPolicy::IfNotPresent
    );
    let a = ensure_image(&store, &puller, &name, PullPolicy::Always).unwrap();
    // The tag moves to another image: Always sees it, IfNotPresent keeps what it has.
    reg.push(&images.layout, "multi", "test/moving:latest");
    let kept = ensure_image(&store, &puller, &name, PullPolicy::IfNotPresent).unwrap();
    assert_eq!(kept.id, a.id);
    let b = ensure_image(&store, &puller, &name, PullPolicy::Always).unwrap();
    assert_ne!(b.id, a.id);
    assert_eq!(b.layers.len(), 2);
    // Without the registry: IfNotPresent and Never still work from the store, Always fails.
    drop(reg);
    assert_eq!(
        ensure_image(&store, &puller, &name, PullPolicy::IfNotPresent)
            .unwrap()
            .id,
        b.id
    );
    assert_eq!(
        ensure_image(&store, &puller, &name, PullPolicy::Never)
            .unwrap()
            .id,
        b.id
    );
    assert!(ensure_image(&store, &puller, &name, PullPolicy::Always).is_err());
}
