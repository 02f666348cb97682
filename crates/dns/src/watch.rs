//! kube-rs watches of Services, EndpointSlices (discovery.k8s.io/v1, as kube-proxy and CoreDNS
//! read them) and Namespaces that keep the cache current. Each watch buffers its (re-)list and
//! swaps it in whole at `InitDone`, so a query never sees half a list.

use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

use crate::cache::Cache;

type Shared = Arc<RwLock<Cache>>;

/// One watched kind: how its events change the cache.
trait Kind:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static
{
    const NAME: &'static str;
    fn apply(cache: &mut Cache, obj: &Self);
    fn delete(cache: &mut Cache, obj: &Self);
    fn replace(cache: &mut Cache, all: &[Self]);
}

impl Kind for Service {
    const NAME: &'static str = "services";
    fn apply(cache: &mut Cache, obj: &Self) {
        cache.apply_service(obj)
    }
    fn delete(cache: &mut Cache, obj: &Self) {
        cache.delete_service(obj)
    }
    fn replace(cache: &mut Cache, all: &[Self]) {
        cache.replace_services(all)
    }
}

impl Kind for EndpointSlice {
    const NAME: &'static str = "endpointslices";
    fn apply(cache: &mut Cache, obj: &Self) {
        cache.apply_slice(obj)
    }
    fn delete(cache: &mut Cache, obj: &Self) {
        cache.delete_slice(obj)
    }
    fn replace(cache: &mut Cache, all: &[Self]) {
        cache.replace_slices(all)
    }
}

impl Kind for Namespace {
    const NAME: &'static str = "namespaces";
    fn apply(cache: &mut Cache, obj: &Self) {
        cache.apply_namespace(obj)
    }
    fn delete(cache: &mut Cache, obj: &Self) {
        cache.delete_namespace(obj)
    }
    fn replace(cache: &mut Cache, all: &[Self]) {
        cache.replace_namespaces(all)
    }
}

/// Which kinds have not listed yet (for the sync timeout's message).
static KINDS: [&str; 3] = [Service::NAME, EndpointSlice::NAME, Namespace::NAME];

/// Starts the three watches; the future completes when each has swapped in its first list.
pub(crate) fn start(
    client: kube::Client,
    cache: Shared,
) -> (
    Vec<JoinHandle<()>>,
    impl std::future::Future<Output = Result<(), String>>,
) {
    let (tx_s, rx_s) = signal::channel(false);
    let (tx_e, rx_e) = signal::channel(false);
    let (tx_n, rx_n) = signal::channel(false);
    let handles = vec![
        tokio::spawn(run::<Service>(client.clone(), cache.clone(), tx_s)),
        tokio::spawn(run::<EndpointSlice>(client.clone(), cache.clone(), tx_e)),
        tokio::spawn(run::<Namespace>(client, cache.clone(), tx_n)),
    ];
    let synced = async move {
        let mut pending = Vec::new();
        for (mut rx, name) in [rx_s, rx_e, rx_n].into_iter().zip(KINDS) {
            if rx.wait_for(|done| *done).await.is_err() {
                pending.push(name);
            }
        }
        if pending.is_empty() {
            Ok(())
        } else {
            Err(format!("the {} watch stopped", pending.join(", ")))
        }
    };
    (handles, synced)
}

/// The sync timeout's message: which lists have not arrived.
pub(crate) fn pending(cache: &Shared) -> String {
    let synced = cache
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .synced_kinds();
    let missing: Vec<&str> = KINDS
        .iter()
        .copied()
        .filter(|k| !synced.contains(k))
        .collect();
    format!("no complete list of {} yet", missing.join(", "))
}

async fn run<K: Kind>(client: kube::Client, cache: Shared, synced: signal::Sender<bool>) {
    let api: Api<K> = Api::all(client);
    // Errors (API server away, a watch expired) are retried with kube-rs's back-off; the cache
    // keeps its last state meanwhile, as CoreDNS's informers do.
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut buffer: Vec<K> = Vec::new();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(kind = K::NAME, error = %e, "cluster DNS watch failed; retrying");
                continue;
            }
        };
        match event {
            Event::Init => buffer.clear(),
            Event::InitApply(obj) => buffer.push(obj),
            Event::InitDone => {
                let mut c = write(&cache);
                K::replace(&mut c, &buffer);
                c.mark_synced(K::NAME);
                drop(c);
                buffer.clear();
                let _ = synced.send(true);
            }
            Event::Apply(obj) => {
                K::apply(&mut write(&cache), &obj);
            }
            Event::Delete(obj) => {
                K::delete(&mut write(&cache), &obj);
            }
        }
    }
}

/// The cache for writing; a panic elsewhere while it was held leaves data that is still
/// consistent per object, so the lock's poison is ignored rather than stopping DNS.
fn write(cache: &Shared) -> std::sync::RwLockWriteGuard<'_, Cache> {
    let mut c = cache
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    c.bump_generation();
    c
}
