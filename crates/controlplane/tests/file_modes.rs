//! The control plane's data dir is its own (issue 12): every directory in it 0700 and no file
//! readable or writable by group or others (keys, tokens, the store's log, kubeconfigs and
//! certificates alike, all 0600 from their creation on); and it refuses to start on a key or
//! token file that group or others can read, naming the file, its mode and the fix.

use rktup_controlplane::ControlPlane;
use rktup_testkit::{mode, not_private, tree};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

async fn start(dir: &Path) -> Result<rktup_controlplane::Handle, String> {
    ControlPlane::builder()
        .data_dir(dir)
        .bind("127.0.0.1:0".parse().expect("addr"))
        .with_controllers(false)
        .start()
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn data_dir_is_private_and_unprotected_keys_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cp");
    let cp = start(&dir).await.expect("control plane");
    cp.mint_node_token("node-a").expect("token");
    let paths = tree(&dir, None);
    for f in [
        "store/log.jsonl",
        "store/LOCK",
        "tokens.json",
        "admin.kubeconfig",
        "pki/ca.key",
        "pki/apiserver.key",
        "pki/admin.key",
        "pki/sa.key",
    ] {
        assert!(paths.contains(&dir.join(f)), "{f} in {paths:#?}");
    }
    let wrong = not_private(&paths);
    assert!(
        wrong.is_empty(),
        "dirs must be 0700 and files unreadable by group/others: {wrong:#?}"
    );
    for f in ["pki/ca.key", "pki/sa.key", "tokens.json", "store/log.jsonl"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    cp.shutdown().await;

    // A key or token file readable by others: refused at start-up, with the file, mode and fix.
    for (f, m) in [
        ("pki/ca.key", 0o644),
        ("pki/sa.key", 0o640),
        ("tokens.json", 0o604),
    ] {
        let p = dir.join(f);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).expect("chmod");
        let e = match start(&dir).await {
            Ok(cp) => {
                cp.shutdown().await;
                panic!("the control plane started with {f} at {m:04o}");
            }
            Err(e) => e,
        };
        for want in [
            "UNPROTECTED PRIVATE KEY FILE".to_string(),
            p.display().to_string(),
            format!("{m:04o}"),
            format!("chmod 600 {}", p.display()),
        ] {
            assert!(e.contains(&want), "{want:?} in {e}");
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    // Fixed: it starts again.
    start(&dir).await.expect("restart").shutdown().await;
}
