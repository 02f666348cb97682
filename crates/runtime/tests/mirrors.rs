//! Registry mirrors against real registries (Debian's docker-registry on 127.0.0.1): a mirror
//! that serves the image wins, one that lacks it or does not answer falls back to the next
//! endpoint and then the registry itself, an exclusive registry never reaches itself, and
//! Docker Hub names keep their `library/` rule on a mirror. No internet here: a docker.io
//! pull that succeeds came from the mirror.

use rktup_node_contract::RegistryMirror;
use rktup_runtime::image::{ImageStore, Puller, Reference};
use rktup_testkit::{free_port, Images, Registry};

fn mirror(s: &str) -> RegistryMirror {
    s.parse().unwrap()
}

#[test]
fn mirrors_in_order_then_the_registry() {
    let images = Images::build();
    let (empty, origin, hub) = (Registry::start(), Registry::start(), Registry::start());
    origin.push(&images.layout, "busybox", "team/app:1");
    hub.push(&images.layout, "busybox", "library/busybox:mirrored");
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());

    // The origin's mirrors: one not listening, one without the image; then the origin itself.
    let app = Reference::parse(&format!("{}/team/app:1", origin.addr)).unwrap();
    let puller = Puller::new()
        .with_insecure_registries(std::slice::from_ref(&origin.addr))
        .with_mirrors(
            &[
                mirror(&format!("{}={dead}", origin.addr)),
                mirror(&format!("{}=http://{}", origin.addr, empty.addr)),
            ],
            &[],
        );
    let rec = puller.pull(&store, &app).unwrap();
    assert!(rec.names.contains(&app.to_string()), "{:?}", rec.names);

    // Exclusive: the same mirrors and no fall-back, every endpoint's failure said.
    let only = Puller::new()
        .with_insecure_registries(std::slice::from_ref(&origin.addr))
        .with_mirrors(
            &[
                mirror(&format!("{}={dead}", origin.addr)),
                mirror(&format!("{}=http://{}", origin.addr, empty.addr)),
            ],
            std::slice::from_ref(&origin.addr),
        );
    let fresh = tempfile::tempdir().unwrap();
    let err = only
        .pull(&ImageStore::open(fresh.path()).unwrap(), &app)
        .unwrap_err()
        .to_string();
    assert!(err.contains("from any endpoint"), "{err}");
    assert!(err.contains(&format!("mirror {dead}")), "{err}");
    assert!(
        err.contains(&format!("mirror http://{}", empty.addr)),
        "{err}"
    );
    assert!(!err.contains(&format!("{}: ", origin.addr)), "{err}");

    // docker.io's short name through a mirror, stored under Docker Hub's full name.
    let hub_puller = Puller::new().with_mirrors(
        &[mirror(&format!("docker.io=http://{}", hub.addr))],
        &["docker.io".into()],
    );
    let bb = Reference::parse("busybox:mirrored").unwrap();
    let rec = hub_puller.pull(&store, &bb).unwrap();
    assert!(
        rec.names
            .contains(&"docker.io/library/busybox:mirrored".to_string()),
        "{:?}",
        rec.names
    );
    // `*` mirrors every registry without its own.
    let star =
        Puller::new().with_mirrors(&[mirror(&format!("*=http://{}", hub.addr))], &["*".into()]);
    let other = Reference::parse("ghcr.io/library/busybox:mirrored").unwrap();
    star.pull(&store, &other).unwrap();
}
